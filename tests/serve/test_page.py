"""The try-it page at /, in headless Chromium against a real server: the model's example is one click from a
prediction, and detections and masks are drawn over the picture."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest

import dlforge
from tests.browser import ARGS, CHROMIUM
from tests.serve.conftest import ThreadServer

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test` (Debian package)")

# the overlay canvas's pixels whose red, green and blue differ: the example image is a uniform grey, so these are
# drawn boxes and masks
COLOURED = """() => { const c = document.getElementById('overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) n++; return n; }"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, task: str) -> tuple[object, list[str]]:
    """The page at `url`, once it has described the model; and the errors its console will report."""
    errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    page.wait_for_function(f"document.getElementById('about').textContent.includes('{task}')")
    return page, errors


def predict(page) -> None:
    page.click("#go")
    page.wait_for_function("document.getElementById('label').textContent || document.getElementById('error')"
                           ".textContent", timeout=60_000)
    assert page.text_content("#error") == ""


def test_the_example_is_one_click_from_a_prediction(browser, trained_run) -> None:
    offline = dlforge.load(trained_run.path)
    example = offline.wire.example(offline.meta)
    expected = offline.predict([base64.b64decode(example)])[0]["label"]
    with ThreadServer(trained_run.path) as server:
        page, errors = open_page(browser, server.url, "image_classification")
        assert page.text_content("#classes").endswith(", ".join(offline.meta["classes"]))
        assert page.eval_on_selector("#preview", "i => i.complete && i.naturalWidth") > 0  # the example, shown
        assert page.get_attribute("#docs", "href") == "docs"
        predict(page)
        label = page.text_content("#label")
        bars = page.locator(".bar").count()
        docs = page.evaluate("fetch(document.getElementById('docs').href).then(r => r.status)")
        page.close()
    assert label.startswith(expected + " (")
    assert bars == len(offline.meta["classes"]) and docs == 200
    assert errors == []


def test_detections_are_drawn_over_the_picture(browser, tiny_runs) -> None:
    with ThreadServer(tiny_runs("object_detection")) as server:
        page, errors = open_page(browser, server.url, "object_detection")
        assert not page.is_hidden("#options")  # the model's defaults, to edit: here a low bar, to see boxes
        page.fill("#options", '{"conf": 0.0001, "max_det": 3}')
        predict(page)
        page.wait_for_selector("#overlay", state="visible")
        label, coloured = page.text_content("#label"), page.evaluate(COLOURED)
        page.close()
    assert label.startswith("3 objects: ")
    assert coloured > 0
    assert errors == []


def test_masks_are_drawn_as_pycocotools_decodes_them(browser, tiny_runs) -> None:
    from pycocotools import mask as coco_mask

    with ThreadServer(tiny_runs("semantic_segmentation")) as server:
        page, errors = open_page(browser, server.url, "semantic_segmentation")
        predict(page)
        page.wait_for_selector("#overlay", state="visible")
        assert "of the pixels" in page.text_content("#label")
        # the page's run-length decoding, on a mask with many runs of each class, against pycocotools'
        classes = page.evaluate("classes")
        mask = np.random.default_rng(0).integers(0, len(classes), (37, 23)).astype(np.uint8)
        rle = {name: {"size": [37, 23], "counts": coco_mask.encode(np.asfortranarray(mask == k))["counts"].decode()}
               for k, name in enumerate(classes)}
        alpha = page.evaluate("p => Array.from(maskCanvas(p).getContext('2d').getImageData(0, 0, 23, 37).data)"
                              ".filter((v, i) => i % 4 === 3)", {"size": [37, 23], "rle": rle})
        page.close()
    assert len(classes) > 1
    assert (np.asarray(alpha).reshape(37, 23) > 0).tolist() == (mask > 0).tolist()  # the first class: background
    assert errors == []
