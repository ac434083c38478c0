"""The app in a real browser: `streamlit run app.py` on a free port with a tiny checkpoint, driven by
chromium through playwright. Skipped when chromium or playwright is missing, unless REQUIRE_BROWSER=1.

    REQUIRE_BROWSER=1 .venv/bin/python -m pytest tests/test_browser.py -q
Leaves a screenshot in test-artifacts/app.png."""
import os
import shutil
import sys

import pytest

from conftest import ROOT, build_tiny_checkpoints, free_port, streamlit_server, wait_health

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                             shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and os.path.isfile(p)), None)
ARTIFACTS = os.path.join(ROOT, "test-artifacts")


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "playwright (pip install playwright)" if sync_playwright is None else \
        "chromium (apt-get install chromium, or CHROMIUM=/path)" if CHROMIUM is None else None
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {missing} is missing")
        pytest.skip(f"{missing} is missing")
    return sync_playwright


def test_chat_in_a_real_browser(tmp_path):
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect
    # a window of 256 tokens: room for the earlier turns of the conversation below
    out_root = build_tiny_checkpoints(str(tmp_path / "ckpts"), block_size=256)
    port = free_port()
    args = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
            f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
            "--server.fileWatcherType=none"]
    os.makedirs(ARTIFACTS, exist_ok=True)
    log = os.path.join(ARTIFACTS, "browser-server.log")
    with streamlit_server(args, out_root, log) as proc:
        wait_health(port, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/")
                box = page.get_by_test_id("stChatInputTextArea")
                box.wait_for()

                # a fact question: answered by the FAQ
                box.fill("¿Los gatos son felinos?")
                box.press("Enter")
                page.get_by_text("Los gatos son felinos: pertenecen").wait_for()
                page.get_by_text("respuesta fija").first.wait_for()

                # FAQ off (sidebar toggle): the same kind of question now goes to the model
                page.get_by_text("Respuestas fijas (FAQ) primero").click()
                box.fill("¿Cuál es la capital de Costa Rica?")
                box.press("Enter")
                page.get_by_text("tokens/s").first.wait_for()
                msgs = page.get_by_test_id("stChatMessage")
                expect(msgs).to_have_count(4)  # (retried: a rerun may briefly show the old elements too)
                assert "modelo" in msgs.nth(3).inner_text()
                assert "con 1 turno(s) anteriores" in msgs.nth(3).inner_text()  # the FAQ turn is context

                # a follow-up: the earlier turn goes into the model's prompt (the raw trace shows it)
                page.get_by_text("Mostrar traza cruda").click()
                box.fill("¿Y los perros?")
                box.press("Enter")
                expect(msgs).to_have_count(6)
                page.get_by_test_id("stChatMessage").nth(5).get_by_test_id("stCode").wait_for()
                trace = msgs.nth(5).get_by_test_id("stCode").inner_text()
                assert "<instr>¿Cuál es la capital de Costa Rica?<resp>" in trace and \
                    trace.split("<eos>")[-1].startswith("<instr>¿Y los perros?<resp>"), trace

                # look inside: the expander under the model's answer, with its heatmap
                page.get_by_text("Mirar dentro de esta respuesta").last.click()  # (the last answer's)
                page.get_by_role("tab", name="Atención").wait_for()
                page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg") \
                    .first.wait_for()
                page.set_viewport_size({"width": 1280, "height": 2000})  # the app scrolls inside: show it all
                page.wait_for_timeout(800)  # let vega finish drawing before the screenshot
                path = os.path.join(ARTIFACTS, "app.png")
                page.screenshot(path=path, full_page=True)
                assert os.path.getsize(path) > 10_000
            except Exception:
                page.screenshot(path=os.path.join(ARTIFACTS, "app-failure.png"), full_page=True)
                raise
            finally:
                browser.close()
