"""Headless Chromium driven through Selenium, for checking report pages as a person sees them.

Selenium rather than Playwright: Debian's chromium-driver is built from the same sources as
its chromium, so driver and browser always speak the same protocol version, and Selenium's
wheel brings no browser of its own (Playwright pins its own Chromium build; with Debian's it
is an untested pairing). The network is blocked twice: the host resolver maps every name to
nothing, and the DevTools protocol refuses every http(s)/ws URL, so a page that needed a CDN
fails visibly instead of passing on this machine and breaking offline.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

# Installed by Debian's `chromium` and `chromium-driver` (.ci/run installs them when missing).
CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
WIDTH, MAX_HEIGHT = 1400, 9000

# Collects what a person would see in the console: uncaught errors, rejected promises and
# console.error calls, from before the page's own scripts run.
_ERROR_TRAP = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + (e.message || e.type)));
window.addEventListener('unhandledrejection', e => window.__errors.push('rejection: ' + e.reason));
const original = console.error.bind(console);
console.error = (...args) => { window.__errors.push('console.error: ' + args.join(' ')); original(...args); };
"""

# Each plot section: its figure's traces and data points as Plotly holds them, and the marks
# drawn in the DOM (line paths with geometry, markers, bars, parallel-coordinate canvases).
PLOT_STATE = """
return Array.from(document.querySelectorAll('section.plot')).map(section => {
  const gd = section.querySelector('.js-plotly-plot');
  const slug = section.dataset.plot;
  if (!gd || !gd._fullData) return {slug, traces: 0, points: 0, marks: 0, width: 0, height: 0};
  const count = t => Math.max((t.x || []).length, (t.y || []).length, (t.values || []).length,
    ((t.dimensions || [])[0] || {values: []}).values.length);
  const points = gd._fullData.filter(t => t.visible !== false).reduce((n, t) => n + count(t), 0);
  const lines = Array.from(gd.querySelectorAll('path.js-line'))
    .filter(p => (p.getAttribute('d') || '').length > 4).length;
  const marks = lines + gd.querySelectorAll('path.point, .bars path, .parcoords canvas').length;
  const box = gd.getBoundingClientRect();
  return {slug, traces: gd._fullData.length, points, marks, width: box.width, height: box.height};
});
"""


def find_browser() -> str:
    """'' when Chromium and its driver are both on PATH, else why not."""
    missing = [name for name in (CHROMIUM, CHROMEDRIVER) if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return ""


class Browser:
    """One headless Chromium for many pages (starting it is the slow part)."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",  # as root, and in containers without user namespaces
            "--disable-dev-shm-usage",
            "--enable-unsafe-swiftshader",  # WebGL in software (parallel coordinates)
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--window-size={WIDTH},900",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=shutil.which(CHROMEDRIVER) or CHROMEDRIVER)
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]}
        )
        self.driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": _ERROR_TRAP}
        )

    def open(self, page: Path, screenshot: Path, timeout: float = 60) -> dict[str, Any]:
        """Load `page`, wait until every plot is drawn, screenshot the whole page; returns
        {"plots": [...], "errors": [...], "requests": [...], "title": ...}."""
        driver = self.driver
        driver.set_window_size(WIDTH, 900)
        driver.get(page.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while True:
            plots = driver.execute_script(PLOT_STATE)
            if all(p["traces"] for p in plots) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(WIDTH, min(int(height) + 40, MAX_HEIGHT))
        time.sleep(0.5)  # responsive plots redraw at the new size
        plots = driver.execute_script(PLOT_STATE)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        return {
            "plots": plots,
            "errors": driver.execute_script("return window.__errors") + logged,
            # Everything the page fetched: all inline, so nothing but the page itself.
            "requests": driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            ),
            "title": driver.title,
            "plotly": driver.execute_script("return typeof window.Plotly"),
        }

    def close(self) -> None:
        self.driver.quit()
