"""The studio page end to end in a real browser (Debian's chromium driven by Playwright; .ci/serve.sh installs it):
prompt -> variants streamed with previews and their seeds -> pick -> paint a mask -> re-inpaint -> gallery ->
download a PNG that carries its parameters and C2PA credentials."""

import io

import numpy as np
import pytest
from PIL import Image

from incasa.safety import provenance

from .conftest import CHROMIUM_ARGS, need_binary


@pytest.fixture
def page():
    chromium = need_binary("/usr/bin/chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the serve extra)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(30000)
            yield page
        finally:
            browser.close()


def test_generate_pick_mask_inpaint_download(tiny_server, page, tmp_path):
    page.goto(tiny_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    assert page.input_value("#model") == "tiny"
    page.fill("#prompt", "a red square")
    page.fill("#n", "2")
    page.fill("#steps", "6")
    page.fill("#seed", "40")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('.variant img[data-final]').length === 2")
    assert page.evaluate("window.studio.partials") == 4  # 2 previews x 2 variants were shown while generating
    assert page.locator(".variant .meta").all_text_contents() == ["seed 40", "seed 41"]
    assert page.locator("#progress").get_attribute("max") == "6"

    page.locator(".variant .pick").nth(1).click()
    page.wait_for_selector("#editor:not([hidden])")
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 200, steps=8)
    page.mouse.up()
    assert page.evaluate("window.studio.maskPixels") > 3
    page.click("#inpaint")
    page.wait_for_function("document.querySelectorAll('.gallery-item').length === 3")
    assert "inpaint" in page.locator(".gallery-item .meta").first.text_content()
    assert page.locator("#error").is_hidden()

    with page.expect_download() as info:
        page.locator(".gallery-item a.download").first.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    data = path.read_bytes()
    img = Image.open(io.BytesIO(data))
    assert img.size == (512, 512) and "inpaint" in img.info["incasa"] and "Seed: 1041" in img.info["parameters"]
    report = provenance.verify(data, "png")
    assert report["state"] == "valid" and report["parameters"]["mode"] == "inpaint"
    # outside the painted stroke the picked variant is kept pixel for pixel
    picked = Image.open(io.BytesIO(__import__("base64").b64decode(page.evaluate("window.studio.picked.b64"))))
    corner = (slice(480, 512), slice(0, 32))
    assert (np.asarray(img.convert("RGB"))[corner] == np.asarray(picked.convert("RGB"))[corner]).all()
