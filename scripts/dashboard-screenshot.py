"""Take docs/dashboard.png: optuna-dashboard on a synthetic 40-trial study (bench.report's,
with the ten survey baselines), opened in headless Chromium through Playwright.

    .venv/bin/python scripts/dashboard-screenshot.py [docs/dashboard.png]
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STUDY = "survey baselines + search (synthetic)"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    import optuna
    from optuna_dashboard import wsgi
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from bench.report import build_synthetic_study
    from medsweep.storage import open_storage

    output = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(f"sqlite:///{Path(folder) / 'studies.db'}")
        study = build_synthetic_study(storage, STUDY, 40, seed=4)
        server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(f"{base}/dashboard/studies/{study._study_id}", wait_until="domcontentloaded")
            page.get_by_text(STUDY).first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle", timeout=60_000)
            page.wait_for_timeout(1500)  # let plotly finish drawing
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output))
            browser.close()
        server.shutdown()
    # A palette PNG is a fraction of the size and looks the same for a UI screenshot.
    Image.open(output).convert("RGB").quantize(colors=128).save(output, optimize=True)
    print(f"wrote {output} ({output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
