"""A screenshot of the web demo answering about a synthetic image, in headless Chromium.

    python experiments/2026-12-02_demo/screenshot.py --ckpt RUN/checkpoints/last.ckpt \\
        --out experiments/2026-12-02_demo/demo.png

Starts `demo.py`'s app on a free localhost port (the default tiny config), uploads a REC test
image of `data/synthetic`, asks its referring question and saves the page.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.png"))
    args = p.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from groundinggpt.demo import launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    overrides = [f"ckpt_path={args.ckpt}", f"paths.root_dir={REPO}", "paths.output_dir=/tmp/demo",
                 "assistant.device=cpu", f"server_port={port}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("demo", overrides=overrides)
    record = json.loads((REPO / "data/synthetic/annotations/rec_test.json").read_text())[0]
    image = REPO / "data/synthetic" / record["image"]
    question = record["conversations"][0]["value"].replace("<image>\n", "")
    app = launch(cfg, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(app.local_url, wait_until="domcontentloaded")
            page.locator("#image-file input[type=file]").set_input_files(str(image))
            expect(page.locator("#status")).to_contain_text("Loaded image")
            page.locator("#question textarea").fill(question)
            page.locator("#ask").click()
            expect(page.locator("#status")).to_contain_text("Turn 1.")
            expect(page.locator("#picture img")).to_be_visible()
            page.screenshot(path=str(args.out), full_page=True)
            answer = page.locator("#answer textarea").input_value()
            browser.close()
    finally:
        app.close()
    print(f"question: {question}\n{answer}\ntruth: {record['conversations'][1]['value']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
