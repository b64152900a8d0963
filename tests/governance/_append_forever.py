"""Child of test_crash.py: append records (some of them megabytes, so a kill can land inside a write)
and sign heads until killed. Prints "ready" once its session is open."""
import os
import sys

from holo_jax.governance.log_writer import AuditLog
from holo_jax.governance.signing import load_signing_key

log = AuditLog(sys.argv[1], load_signing_key(), process_index=0, log_name="audit")
print("ready", flush=True)
i = 0
while True:
    size = (1 << 20) if i % 3 == 0 else 200
    log.append({"type": "event", "event": {"kind": "bulk", "i": i, "blob": "x" * size}})
    if i % 5 == 4:
        log.sign_head()
    i += 1
    if i > 100000:
        os._exit(0)
