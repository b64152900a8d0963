"""The HTML page parses, and every word is on it, escaped."""
from html.parser import HTMLParser

import numpy as np

from holo_jax.explain import html_page


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self.tags, self._in_word, self.text = [], [], False, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_word = tag == "span" and ("class", "w") in attrs
        if self._in_word:
            self.spans.append("")

    def handle_endtag(self, tag):
        self._in_word = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_word:
            self.spans[-1] += data


def test_html_renders_every_word_escaped():
    words = [["<script>alert(1)</script>", "a&b", '"quoted"', "plain"], ["ünïcödé", "<b>"]]
    relevance = {"symbolic": [np.array([1.0, -0.5, 0.0, 0.2]), np.array([0.3, 0.0])],
                 "random": [np.random.default_rng(0).random(4), np.random.default_rng(1).random(2)]}
    rules = [{"rule": 'IF contains("<script>alert(1)</script>") THEN toxic', "precision": 0.95, "samples": 64,
              "meets_target": True},
             {"rule": 'IF contains("<b>") THEN not_toxic', "precision": 0.5, "samples": 64, "meets_target": False}]
    page = html_page(title="t <x>", words=words, relevance=relevance, rules=rules, probabilities=np.array([0.9, 0.2]),
                     decision_list_text='1. IF contains("<b>") THEN toxic\n2. ELSE not_toxic', summary={"fidelity": 0.5},
                     faithfulness_table="method  x")
    assert "<script>" not in page and "<b>" not in page.replace("<body>", "")
    parser = _Collect()
    parser.feed(page)
    parser.close()
    # Every word of every example, once per method, exactly as written (after unescaping).
    want = [w for ws in words for _ in relevance for w in ws]
    assert parser.spans == want
    assert "script" not in parser.tags and "b" not in parser.tags
    text = "".join(parser.text)
    assert 'IF contains("<script>alert(1)</script>") THEN toxic' in text and "(below target)" in text
