#!/usr/bin/env python3
# Usage: tests/python/check_report.py PAGE.html
#
# Parses an HTML page written by pipelines/report (or the DOM Chromium dumps
# of it) with Python's html.parser and prints one JSON object with what the
# front-door tests check:
#   img, img_data        <img> elements, those whose src is a data: URI
#   error, alert, summary, final_summary, record
#                        elements carrying that class
#   script               <script> elements (must be 0: captions are escaped)
#   external             attribute values / CSS that load anything from
#                        outside the page (http://, https://, //host, a
#                        relative file, @import, url(...) that is not data:)
#   unclosed             non-void elements left open at the end (should be
#                        empty for the report's own output)
#   text                 the page's text content (for checking escaping)
import json
import re
import sys
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
        "track", "wbr"}
URL_ATTRS = {"src", "href", "srcset", "poster", "action", "formaction", "data", "background", "cite",
             "longdesc", "manifest", "icon", "xlink:href", "ping"}
CSS_URL_RE = re.compile(r"url\(\s*['\"]?\s*([^)'\"\s]*)", re.I)


def css_external(css):
    out = []
    if re.search(r"@import", css, re.I):
        out.append("@import in CSS")
    for u in CSS_URL_RE.findall(css):
        if not u.lower().startswith("data:") and not u.startswith("#"):
            out.append("url(%s)" % u)
    return out


class Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.counts = {"img": 0, "img_data": 0, "error": 0, "alert": 0, "summary": 0,
                       "final_summary": 0, "record": 0, "script": 0}
        self.external = []
        self.stack = []
        self.in_style = False
        self.text = []

    def handle_starttag(self, tag, attrs):
        self._tag(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._tag(tag, attrs)

    def _tag(self, tag, attrs):
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "img":
            self.counts["img"] += 1
            if a.get("src", "").startswith("data:image/"):
                self.counts["img_data"] += 1
        if tag == "script":
            self.counts["script"] += 1
        if tag == "link":
            self.external.append("<link %s>" % a.get("href", ""))
        classes = a.get("class", "").split()
        for c, key in (("error", "error"), ("alert", "alert"), ("summary", "summary"),
                       ("final-summary", "final_summary"), ("record", "record")):
            if c in classes:
                self.counts[key] += 1
        for k, v in a.items():
            if k in URL_ATTRS:
                val = v.strip()
                if val and not val.lower().startswith("data:") and not val.startswith("#"):
                    self.external.append("%s=%s" % (k, val))
            if k == "style":
                self.external.extend(css_external(v))
            if k.startswith("on"):
                self.external.append("event handler attribute %s" % k)
        if tag == "style":
            self.in_style = True

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False
        if tag in VOID:
            return
        # Pop to the matching tag (html.parser does not repair trees).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.in_style:
            self.external.extend(css_external(data))
        else:
            self.text.append(data)


def check(page):
    c = Checker()
    c.feed(page)
    c.close()
    res = dict(c.counts)
    res["external"] = c.external
    res["unclosed"] = c.stack
    res["text"] = "".join(c.text)
    return res


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(json.dumps(check(f.read())))
