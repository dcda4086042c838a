"""report.html of a real 2-rank run, opened in a real browser (Debian's headless chromium).

- A 2-rank GPTQ run of tinystories-656K (with --rtn-baseline) and `qshard eval
  --report` with two token sets write OUT/report.html.
- The file is self-contained: no script, no link/img/iframe, no URL of any scheme
  outside itself.
- chromium --headless --dump-dom: each chart (loss, timeline, memory) is an SVG
  with its marks (rects of non-zero size): 14 linears × (GPTQ, RTN), a phase bar
  for each block on its rank, measured and planned memory for both ranks; the
  numbers in the tables are the run's own (qshard_report.json, qshard eval --json).
- No console message, and the browser's network log has no request outside the
  file (--log-net-log), with the browser's own update/metrics hosts set aside.
- chromium --screenshot: each chart's colours are painted (more pixels than its
  legend swatch could give); the screenshot stays in the build dir
  (QS_BUILD_DIR/report-browser/report.png).
- The checks themselves are checked: a page with a console.error and an external
  image is caught by both.
Skips (77) when chromium is absent; scripts/install_deps.sh installs it.
"""
import html.parser
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
tokenizers = qstest.need("tokenizers")
qstest.need("PIL")
from PIL import Image  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if not CHROMIUM:
    qstest.skip("chromium is not installed (scripts/install_deps.sh installs Debian's chromium): "
                "the report was not checked in a browser")
MODEL = qstest.shared("models", "tinystories-656K")
TEXT = qstest.shared("text", "tinystories_valid_head.txt")
tmp = qstest.tmpdir()
art = os.path.join(os.environ.get("QS_BUILD_DIR", tmp), "report-browser")
os.makedirs(art, exist_ok=True)

# ---- the run -----------------------------------------------------------------------------------
tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
text = open(TEXT, encoding="utf-8").read()
ids = tok.encode(text[100000:300000], add_special_tokens=False).ids
calib = os.path.join(tmp, "calib.npy")
np.save(calib, np.array(ids[:32 * 64], dtype=np.int32).reshape(32, 64))
evals = []
for k, (a, b) in enumerate(((0, 20000), (20000, 40000))):
    e = tok.encode(text[a:b], add_special_tokens=False).ids
    evals.append(os.path.join(tmp, f"eval{k}.npy"))
    np.save(evals[-1], np.array(e[:8 * 64], dtype=np.int32).reshape(8, 64))
work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
qstest.mpirun(2, ["run", "--model", MODEL, "--calib", calib, "--work", work, "--out", out, "--bits", 4,
                  "--group-size", 32, "--asym", "--rtn-baseline", "--micro-batch", 8])
p = qstest.run(["eval", "--model", out, "--ref", MODEL, "--tokens", ",".join(evals), "--report", work, "--json"])
eval_rows = [json.loads(l) for l in p.stdout.splitlines()]
qstest.check(len(eval_rows) == 2, f"one JSON line per token set: {p.stdout}")
report = os.path.join(out, "report.html")
page = open(report, encoding="utf-8").read()

# ---- self-contained -------------------------------------------------------------------------------
low = page.lower()
for bad in ("<script", "<link", "<img", "<iframe", "<object", "@import", "url(", "src=", "href=", "http:", "https:",
            "ftp:", "//fonts."):
    qstest.check(bad not in low, f"report.html contains {bad!r}: it must be self-contained")


# ---- the browser -----------------------------------------------------------------------------------
def chromium(url, *args, net=None):
    """Runs headless chromium with network requests made impossible and logged."""
    profile = qstest.tmpdir("qs-chromium-")
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
           "--mute-audio", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--enable-logging=stderr", "--v=0", *args, url]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
    if net:
        cmd.insert(1, f"--log-net-log={net}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    qstest.check(r.returncode == 0, f"chromium exited {r.returncode}: {r.stderr[-2000:]}")
    return r


# the browser's own background services, not the page's requests
OWN_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com", "chrome.com", "chromium.org")


def outside_requests(net):
    urls = set()
    for line in open(net, encoding="utf-8", errors="replace"):
        for part in line.split('"url":"')[1:]:
            urls.add(part.split('"', 1)[0])
    bad = []
    for u in urls:
        scheme = u.split(":", 1)[0].lower()
        if scheme in ("file", "data", "about", "chrome", "chrome-extension", "blob"):
            continue
        host = u.split("//", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
        if any(host == h or host.endswith("." + h) for h in OWN_HOSTS):
            continue
        bad.append(u)
    return bad


def console_lines(stderr):
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]


# the checks catch what they are for: a page with a console error and an outside image
bad_page = os.path.join(tmp, "bad.html")
open(bad_page, "w").write('<!DOCTYPE html><html><body><script>console.error("boom")</script>'
                          '<img src="http://example.invalid/x.png"></body></html>')
net = os.path.join(tmp, "bad-net.json")
r = chromium("file://" + bad_page, "--dump-dom", net=net)
qstest.check(console_lines(r.stderr), "the console check misses a console.error")
qstest.check(any("example.invalid" in u for u in outside_requests(net)), "the network check misses a request")

net = os.path.join(tmp, "net.json")
r = chromium("file://" + os.path.abspath(report), "--dump-dom", net=net)
qstest.check(not console_lines(r.stderr), f"console messages: {console_lines(r.stderr)}")
qstest.check(not outside_requests(net), f"requests outside the file: {outside_requests(net)}")
dom = r.stdout


class Marks(html.parser.HTMLParser):
    """Per SVG id: its rect marks (class contains 'mark') with their classes, size and title;
    per table id: its rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.svg, self.marks, self.tables, self.table, self.cell = None, {}, {}, None, None
        self.title_of = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svg = a.get("id")
            self.marks.setdefault(self.svg, [])
        elif tag == "rect" and self.svg and "mark" in a.get("class", "").split():
            m = {"class": a.get("class", ""), "w": float(a.get("width", 0)), "h": float(a.get("height", 0)), "title": ""}
            self.marks[self.svg].append(m)
            self.title_of = m
        elif tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.tables[self.table].append([])
        elif tag in ("td", "th") and self.table:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None
        elif tag == "rect":
            self.title_of = None
        elif tag == "table":
            self.table = None
        elif tag in ("td", "th") and self.table and self.cell is not None:
            self.tables[self.table][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.title_of is not None:
            self.title_of["title"] += data


mk = Marks()
mk.feed(dom)
for chart in ("chart-loss", "chart-timeline", "chart-memory"):
    qstest.check(chart in mk.marks, f"the DOM has no <svg id={chart}>")
    qstest.check(all(m["w"] > 0 and m["h"] > 0 for m in mk.marks[chart]), f"{chart}: a mark of zero size")


def count(chart, cls):
    return sum(cls in m["class"].split() for m in mk.marks[chart])


qstest.check(count("chart-loss", "method") == 14 and count("chart-loss", "rtn") == 14,
             f"loss chart: {count('chart-loss', 'method')} GPTQ and {count('chart-loss', 'rtn')} RTN bars, expected 14 each")
for rank, block in ((0, 0), (1, 1)):
    bars = [m for m in mk.marks["chart-timeline"] if m["title"].startswith(f"rank {rank} block {block} ")]
    qstest.check(any("ph-forward" in m["class"] for m in bars) and any("ph-solve" in m["class"] for m in bars),
                 f"timeline: no forward/solve bar of block {block} on rank {rank}")
qstest.check(count("chart-memory", "mem-peak") == 2 and count("chart-memory", "mem-plan") == 2,
             "memory chart: measured and planned bars of both ranks")

# the tables show the run's numbers
rep = json.load(open(os.path.join(work, "qshard_report.json")))
worst = max(rep["layers"], key=lambda e: e["loss"])
row = mk.tables["worst"][1]
qstest.check(row[1] == worst["name"] and row[3] == f"{worst['loss']:.3g}" and row[4] == f"{worst['loss_rtn']:.3g}",
             f"worst layer row {row} vs qshard_report.json {worst}")
qstest.check(len(mk.tables["worst"]) == 11, "ten worst layers")
ev = mk.tables["evaltable"][1:]
qstest.check(len(ev) == 2, f"eval table: {len(ev)} rows, expected one per token set")
for cells, want, path in zip(ev, eval_rows, evals):
    qstest.check(cells[1] == path and cells[4] == f"{want['nll']:.4f}" and cells[6] == f"{want['kl_mean']:.4f}" and
                 cells[8] == f"{want['top1']:.4f}", f"eval row {cells} vs qshard eval --json {want}")
qstest.check(len(mk.tables["ranks"]) == 3 and len(mk.tables["memtable"]) == 3, "a row per rank")

# ---- pixels -----------------------------------------------------------------------------------------
shot = os.path.join(art, "report.png")
if os.path.exists(shot):
    os.remove(shot)
chromium("file://" + os.path.abspath(report), f"--screenshot={shot}", "--window-size=1280,2200",
         "--force-device-scale-factor=1")
img = Image.open(shot).convert("RGB")
pixels = np.asarray(img).reshape(-1, 3)


def px(hexcolor):
    h = hexcolor.lstrip("#")
    want = np.array([int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)], dtype=pixels.dtype)
    return int(np.all(pixels == want, axis=1).sum())


# a legend swatch is 10 × 10 px: a chart that painted its marks has many more of its colour
for name, color in (("GPTQ bars", "#24518f"), ("RTN bars", "#f2b134"), ("timeline: forward", "#3f6fb0"),
                    ("timeline: solve", "#c8423f"), ("memory: measured", "#7b4ea3"), ("memory: plan", "#9fd3a4")):
    qstest.check(px(color) > 300, f"{name} ({color}): only {px(color)} pixels in the screenshot {shot}")
print(f"report.html: charts rendered, no console messages, no outside requests; screenshot {shot} "
      f"({img.size[0]}×{img.size[1]})")
print("ok")
