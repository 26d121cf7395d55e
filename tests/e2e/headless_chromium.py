"""A page rendered in real headless Chromium, and what a person would see of it.

The drill report carries no script. `visible_facts` renders a copy with a probe appended that
reads the laid-out page (the text as shown, computed colours, the boxes of the chart labels,
cards whose content overflows them) and writes its findings into the DOM, which `--dump-dom`
prints once the page has loaded. `screenshot` keeps a PNG for a person to look at.

Chromium is Debian's `chromium` package; where it is absent the tests that need it are skipped.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

# No network, no GPU, no sandbox (tests may run as root in a container), a fresh profile each time.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
WINDOW = (1280, 2400)

PROBE = """<script>(() => {
  const colour = (element, property) => getComputedStyle(element)[property];
  const box = element => {
    const rect = element.getBoundingClientRect();
    return {left: rect.left, right: rect.right, top: rect.top, bottom: rect.bottom};
  };
  const status = document.querySelector('[data-field="status"]');
  const facts = {
    title: document.title,
    text: document.body.innerText,
    status: {text: status.innerText, background: colour(status, 'backgroundColor')},
    cards: [...document.querySelectorAll('.kpi')].map(card => ({
      label: card.querySelector('.label').innerText,
      value: card.querySelector('.value').innerText,
      hint: card.querySelector('.hint').innerText,
      value_colour: colour(card.querySelector('.value'), 'color'),
      edge_colour: colour(card, 'borderTopColor'),
      edge_width: parseFloat(colour(card, 'borderTopWidth')),
    })),
    x_labels: [...document.querySelectorAll('svg.chart')].map(chart =>
      [...chart.querySelectorAll('.x-label')].map(label => ({text: label.textContent, ...box(label)}))),
    overflowing: [...document.querySelectorAll('.card')]
      .filter(card => card.scrollWidth > card.clientWidth + 1)
      .map(card => (card.querySelector('h2, .label') || card).innerText),
    page_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
  };
  const out = document.createElement('pre');
  out.id = 'drsentry-probe';
  out.textContent = JSON.stringify(facts);
  document.body.appendChild(out);
})();</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium): the report is not rendered")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="drsentry-chromium-") as profile:
        return subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def visible_facts(page: Path) -> dict[str, Any]:
    """What Chromium shows of `page` (see PROBE for the fields)."""
    with tempfile.TemporaryDirectory(prefix="drsentry-probe-") as directory:
        probed = Path(directory) / page.name
        probed.write_text(
            page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
        )
        rendered = _run("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    found = re.search(r'<pre id="drsentry-probe">(.*?)</pre>', rendered.stdout, re.DOTALL)
    assert found, f"the probe did not run: {rendered.stdout[-500:]} {rendered.stderr[-2000:]}"
    facts: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return facts


def screenshot(page: Path, png: Path) -> tuple[int, int]:
    """A PNG of `page` as Chromium lays it out; its (width, height)."""
    shot = _run(f"--screenshot={png}", page.as_uri())
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def rgb(hex_colour: str) -> str:
    """`#d63c3c` as the browser reports a computed colour: `rgb(214, 60, 60)`."""
    red, green, blue = (int(hex_colour[index : index + 2], 16) for index in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"
