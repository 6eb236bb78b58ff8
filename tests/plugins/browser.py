"""Headless Chromium for tests, driven by selenium through Debian's chromium and chromium-driver
(never a browser download). Tests skip with the reason when either is missing."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless browser test: Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    return chromium, driver


@contextmanager
def chromium(width: int = 900, height: int = 700) -> Iterator[Any]:
    """A headless Chromium WebDriver with software WebGL (SwiftShader)."""
    pytest.importorskip("selenium", reason="headless browser test: pip install selenium (in the dev extra)")
    from selenium import webdriver

    binary, driver_path = _binaries()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", f"--window-size={width},{height}",
                "--disable-extensions", "--mute-audio"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any) -> np.ndarray:
    """The page as [H,W,3] uint8."""
    import imageio.v3 as iio

    return iio.imread(driver.get_screenshot_as_png())[..., :3]


def canvas_box(driver: Any) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the page's largest canvas in screenshot pixels."""
    box = driver.execute_script(
        "const cs=[...document.querySelectorAll('canvas')]; if(!cs.length) return null;"
        "const c=cs.reduce((a,b)=>a.width*a.height>=b.width*b.height?a:b); const r=c.getBoundingClientRect();"
        "const d=devicePixelRatio; return [r.left*d, r.top*d, r.width*d, r.height*d];")
    assert box is not None, "the page has no canvas"
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something other than None or False; fail the test naming ``what``."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = check()
        if last is not None and last is not False:
            return last
        time.sleep(every_s)
    pytest.fail(f"{what} (waited {timeout_s:.0f} s; last: {last!r})")
