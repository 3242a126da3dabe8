"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against the
local API (`python -m local.serve`, which also serves web/).

What the canvas shows is checked on what the page says it drew (web/draw.js's marks, kept in
window.__drawn) against the API's reply, in the colours draw.js exports; pixels are sampled only
where a mark lies clear of every other, so antialiasing and font rendering never decide a test.

Skipped only when /usr/bin/chromium is absent (`apt-get install chromium`; CI installs it).
Playwright's own browser downloads are never used. Screenshots: out/web-screenshot.png (desktop),
out/web-screenshot-phone.png (narrow) and out/web-people*.png (several people), kept as test artefacts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import socket
import struct
import threading
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import ROOT, local_server

PHOTO = ROOT / "tests" / "data" / "pose.jpg"  # one person
PEOPLE_PHOTO = ROOT / "tests" / "data" / "Pilots.jpg"  # three people, their boxes overlapping
OUT = ROOT / "out"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
RESULT_MS = 30_000

pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to test the web page",
)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_deploy():
    spec = importlib.util.spec_from_file_location("web_deploy", ROOT / "web" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The local API and page (`python -m local.serve`): (base URL, /health reply). Always stopped."""
    with local_server(log_dir=tmp_path_factory.mktemp("serve")) as (_process, base):
        with urllib.request.urlopen(f"{base}/health", timeout=30) as reply:
            yield base, json.load(reply)


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@contextmanager
def open_page(browser, **context_options):
    """A fresh page that records console errors and uncaught exceptions (CSP violations among them)."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"exception: {e}"))
    page.set_default_timeout(RESULT_MS)
    try:
        yield page
    finally:
        context.close()


def point_page_at(page, base: str, api_base: str) -> None:
    """Serve the page as web/deploy.py would publish it for an API at `api_base`: config.json
    names the API, and the CSP's connect-src allows its origin."""
    deploy = load_deploy()
    origin = deploy.api_origin(api_base)
    # Chromium asks before a page reaches another loopback port (Local Network Access); a
    # person would click Allow. The deployed page calls a public API and never asks.
    page.context.grant_permissions(["local-network-access"])

    def index(route):
        response = route.fetch()
        route.fulfill(response=response, body=deploy.with_connect_src(response.text(), origin))

    page.route(lambda url: urlsplit(url).path in ("/", "/index.html") and url.startswith(base), index)
    config = deploy.page_config(api_base)
    page.route(f"{base}/config.json", lambda route: route.fulfill(
        status=200, content_type="application/json", body=config))


def base_of(server) -> str:
    return server[0]


def wait_for_result(page) -> None:
    page.wait_for_selector("#result[data-state=done], #result[data-state=error]")
    if page.get_attribute("#result", "data-state") == "error":
        pytest.fail(f"the page shows an error: {page.inner_text('#error')}")


def visible_count(page) -> int:
    return int(page.inner_text("#visible-count"))


def canvas_size(page) -> tuple[int, int]:
    return tuple(page.evaluate("() => [document.getElementById('canvas').width, document.getElementById('canvas').height]"))


def table(page) -> list[list[str]]:
    """The joints table: [name, x, y, score, visible] per row, as shown."""
    return page.eval_on_selector_all("#joints tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def assert_table_shows(page, joints: list[dict], threshold: float) -> None:
    rows = table(page)
    assert [r[0] for r in rows] == [j["name"] for j in joints]
    for row, j in zip(rows, joints):
        assert abs(float(row[1]) - j["x"]) <= 0.051 and abs(float(row[2]) - j["y"]) <= 0.051, (row, j)
        assert abs(float(row[3]) - j["score"]) <= 0.00051, (row, j)
        assert row[4] == ("yes" if j["score"] >= threshold else "no"), (row, j)


def listed_visible(page) -> list[int]:
    """The people list's count of visible joints, person by person."""
    return [int(t) for t in page.locator("#people .person-visible").all_inner_texts()]


def smallest_box_at(people: list[dict], x: float, y: float) -> int:
    """The page's rule for a click: the person whose box holds the point, the smallest box winning."""
    holding = [(b["width"] * b["height"], i) for i, b in enumerate(p["box"] for p in people)
               if b["left"] <= x <= b["left"] + b["width"] and b["top"] <= y <= b["top"] + b["height"]]
    return min(holding)[1] if holding else -1


def click_photo(page, reply: dict, x: float, y: float) -> None:
    """Click the canvas where the photo pixel (x, y) of the reply is shown."""
    box = page.locator("#canvas").bounding_box()
    width, height = canvas_size(page)
    kx, ky = width / reply["image"]["width"], height / reply["image"]["height"]
    page.mouse.click(box["x"] + (x + 0.5) * kx * box["width"] / width,
                     box["y"] + (y + 0.5) * ky * box["height"] / height)


def pixel(page, x: float, y: float) -> list[int]:
    """The canvas's RGB at canvas pixel (x, y)."""
    return page.evaluate("([x, y]) => [...document.getElementById('canvas').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data].slice(0, 3)", [int(x), int(y)])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


# --- what the page drew: web/draw.js's marks, as web/app.js keeps them in window.__drawn --------

def drawn(page) -> list[dict]:
    """The marks drawn over the photo, in painting order, in canvas pixels (web/draw.js drawingOf)."""
    return page.evaluate("() => window.__drawn")


def palette(page) -> dict:
    """web/draw.js's colours, read from the page's own module."""
    return page.evaluate("""async () => {
        const { COLORS, BOX, OUTLINE, LABEL, PICKED_LABEL } = await import("./draw.js");
        return { sides: COLORS, box: BOX, outline: OUTLINE, label: LABEL, picked: PICKED_LABEL };
    }""")


def rgb(page, color: str) -> tuple[int, int, int]:
    """A CSS colour as the canvas paints it."""
    normal = page.evaluate("(color) => { const ctx = document.createElement('canvas').getContext('2d'); "
                           "ctx.fillStyle = color; return ctx.fillStyle; }", color)
    return tuple(bytes.fromhex(normal.removeprefix("#")))


def people_of(reply: dict) -> list[dict]:
    """The reply's people; an older reply's top-level joints are one person without a box."""
    return reply["people"] if "people" in reply else [{"joints": reply["joints"], "box": None}]


def assert_drew(page, reply: dict, sides: list[str], threshold: float, picked: int = 0) -> list[dict]:
    """The canvas shows every person of `reply` at `threshold`, in web/draw.js's colours: a dot per
    joint scoring at least it, where the reply places it; a line per limb whose two joints are shown;
    boxes under the skeletons and numbers over them; with several people the `picked` one's box the
    thickest and on top, its number bold on PICKED_LABEL. Returns the marks."""
    marks, colors = drawn(page), palette(page)
    width, height = canvas_size(page)
    kx, ky = width / reply["image"]["width"], height / reply["image"]["height"]
    at = lambda point: pytest.approx([(point["x"] + 0.5) * kx, (point["y"] + 0.5) * ky])  # noqa: E731
    people = people_of(reply)
    shown = [[j["score"] >= threshold for j in person["joints"]] for person in people]
    of = lambda kind: [m for m in marks if m["kind"] == kind]  # noqa: E731
    layers = [{"box": 0, "limb": 1, "joint": 1, "label": 2}[m["kind"]] for m in marks]
    assert layers == sorted(layers), "boxes under the skeletons, numbers over them"

    joints = {(m["person"], m["joint"]): m for m in of("joint")}
    assert sorted(joints) == [(p, j) for p, seen in enumerate(shown) for j, v in enumerate(seen) if v]
    for (p, j), mark in joints.items():
        assert mark["center"] == at(people[p]["joints"][j]), mark
        assert (mark["color"], mark["outline"]) == (colors["sides"][sides[j]], colors["outline"]), mark

    limbs = {(m["person"], *m["joints"]): m for m in of("limb")}
    pairs = [limb["pair"] for limb in reply["skeleton"]]
    assert sorted(limbs) == sorted((p, a, b) for p, seen in enumerate(shown) for a, b in pairs if seen[a] and seen[b])
    for (p, a, b), mark in limbs.items():
        assert mark["from"] == at(people[p]["joints"][a]) and mark["to"] == at(people[p]["joints"][b]), mark
        assert mark["color"] == colors["sides"][sides[a] if sides[a] == sides[b] else "center"], mark

    highlighted = picked if len(people) > 1 else None
    boxes, labels = of("box"), {m["person"]: m for m in of("label")}
    assert sorted(m["person"] for m in boxes) == [p for p, person in enumerate(people) if person["box"]] == sorted(labels)
    for mark in boxes:
        p, box = mark["person"], people[mark["person"]]["box"]
        assert [mark["x"], mark["y"], mark["width"], mark["height"]] == pytest.approx(
            [(box["left"] + 0.5) * kx, (box["top"] + 0.5) * ky, box["width"] * kx, box["height"] * ky]), mark
        assert mark["color"] == colors["box"]
        label = labels[p]
        assert (label["text"], label["x"], label["y"], label["color"]) == (str(p + 1), mark["x"], mark["y"], colors["box"])
        assert label["background"] == colors["picked" if p == highlighted else "label"], label
        assert ("bold" in label["font"]) == (p == highlighted), label
    if highlighted is not None and people[highlighted]["box"]:
        assert boxes[-1]["person"] == highlighted
        assert all(m["lineWidth"] < boxes[-1]["lineWidth"] for m in boxes[:-1])
    else:
        assert len({m["lineWidth"] for m in boxes}) <= 1, "no box stands out"
    return marks


def joints_drawn(page) -> int:
    return sum(m["kind"] == "joint" for m in drawn(page))


def segment_distance(point, a, b) -> float:
    (px, py), (ax, ay), (bx, by) = point, a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy))) if dx or dy else 0.0
    return math.dist(point, (ax + t * dx, ay + t * dy))


def comes_near(mark: dict, point, reach: float) -> bool:
    """Whether `mark` paints anything within `reach` of `point` (a label's text is taken as at most
    an em a character wide)."""
    x, y = point
    if mark["kind"] == "joint":
        return math.dist(mark["center"], point) <= mark["radius"] + mark["lineWidth"] / 2 + reach
    if mark["kind"] == "limb":
        return segment_distance(point, mark["from"], mark["to"]) <= mark["lineWidth"] / 2 + reach
    if mark["kind"] == "label":
        width = len(mark["text"]) * mark["fontSize"] + 2 * mark["pad"]
        height = mark["fontSize"] + 2 * mark["pad"]
        return mark["x"] - reach <= x <= mark["x"] + width + reach and mark["y"] - reach <= y <= mark["y"] + height + reach
    left, top, right, bottom = mark["x"], mark["y"], mark["x"] + mark["width"], mark["y"] + mark["height"]
    outside = math.dist(point, (min(max(x, left), right), min(max(y, top), bottom)))
    inside = min(x - left, right - x, y - top, bottom - y)
    return (outside if outside > 0 else inside) <= mark["lineWidth"] / 2 + reach


def assert_dots_painted(page, marks: list[dict]) -> None:
    """The canvas holds the dots the page says it drew: sampled only at dots on the canvas that
    nothing drawn later comes near, at the pixel under the centre, which lies wholly inside the dot's
    fill (more than 1.5 px from its edge), so antialiasing never reaches it."""
    reach = 2.5  # the sampled pixel is within 1.5 px of the centre, plus a pixel of antialiasing
    width, height = canvas_size(page)
    clear = [m for i, m in enumerate(marks) if m["kind"] == "joint"
             and 0 <= m["center"][0] < width and 0 <= m["center"][1] < height
             and not any(comes_near(later, m["center"], reach) for later in marks[i + 1:])]
    assert clear, "every dot has another mark over it: nothing to sample"
    colors = {color: rgb(page, color) for color in {m["color"] for m in clear}}
    got = page.evaluate("""(points) => {
        const ctx = document.getElementById('canvas').getContext('2d');
        return points.map(([x, y]) => [...ctx.getImageData(x, y, 1, 1).data].slice(0, 3));
    }""", [[int(x), int(y)] for x, y in (m["center"] for m in clear)])
    for mark, seen in zip(clear, got):
        assert mark["radius"] - mark["lineWidth"] / 2 > 1.5, mark
        assert all(abs(a - b) <= 4 for a, b in zip(seen, colors[mark["color"]])), (mark, seen)


def assert_picked_label_painted(page, marks: list[dict]) -> None:
    """The last mark is the picked person's number, on PICKED_LABEL: its pixel inside the label's
    corner (clear of the text, which starts `pad` px in) is nearer that colour than any other of draw.js."""
    label, colors = marks[-1], palette(page)
    assert label["kind"] == "label" and label["background"] == colors["picked"], label
    got = pixel(page, label["x"] + 1, label["y"] + 1)
    candidates = [colors[name] for name in ("picked", "label", "box", "outline")] + list(colors["sides"].values())
    nearest = min(candidates, key=lambda color: math.dist(got, rgb(page, color)))
    assert nearest == colors["picked"], (label, got)


# --- the happy path -------------------------------------------------------------------------

def test_photo_to_pose_on_a_desktop(server, browser):
    base, health = server
    joints = health["model"]["joints"]
    with open_page(browser, viewport={"width": 1280, "height": 900}, accept_downloads=True) as page:
        page.goto(f"{base}/")
        page.wait_for_selector("#api-status[data-state=ready]")
        assert page.input_value("#threshold") == str(health["model"]["threshold"])

        with page.expect_response(lambda r: urlsplit(r.url).path == "/pose") as answer:
            page.set_input_files("#file", PHOTO)
        wait_for_result(page)
        scores = [j["score"] for j in answer.value.json()["joints"]]
        expected = lambda t: sum(s >= t for s in scores)  # noqa: E731 - the API's rule

        # the photo with the skeleton, at the size it was sent (pose.jpg is under 1280 px)
        canvas = page.locator("#canvas")
        assert canvas.is_visible()
        size = page.evaluate("() => [document.getElementById('canvas').width, document.getElementById('canvas').height]")
        assert size == [1000, 667]
        assert canvas.bounding_box()["width"] > 400
        assert "joints" in canvas.get_attribute("aria-label")

        # one row per joint of the model, and the model and timings shown
        assert page.locator("#joints tbody tr").count() == len(joints)
        assert page.locator("#joints tbody th").all_inner_texts() == joints
        assert health["model"]["name"] in page.inner_text("#model-facts")
        assert "Inference" in page.inner_text("#timing-facts")
        reply = answer.value.json()
        facts = page.inner_text("#model-facts")
        assert ("the whole photo" if reply["region"] is None else "around person 1") in facts
        assert page.locator("#people li").count() == len(reply["people"]) >= 1
        assert page.get_attribute("#people li:first-child button", "aria-pressed") == "true"
        assert_table_shows(page, reply["people"][0]["joints"], health["model"]["threshold"])
        sides = health["model"]["sides"]
        assert_dots_painted(page, assert_drew(page, reply, sides, health["model"]["threshold"]))

        # the slider redraws without a request: keyboard Home = 0 (all visible), End = 1
        requests = []
        page.on("request", lambda r: "/pose" in r.url and requests.append(r.url))
        at_default = visible_count(page)
        assert at_default == expected(health["model"]["threshold"])
        drawing_at_default = page.evaluate("() => document.getElementById('canvas').toDataURL()")
        page.focus("#threshold")
        page.keyboard.press("Home")
        assert page.input_value("#threshold") == "0"
        assert visible_count(page) == len(joints)
        assert page.locator("#joints tbody tr[data-visible=true]").count() == len(joints)
        assert_drew(page, reply, sides, 0.0)
        all_drawn = joints_drawn(page)
        page.keyboard.press("End")
        assert page.input_value("#threshold") == "1"
        assert visible_count(page) == expected(1.0) < len(joints)
        assert_drew(page, reply, sides, 1.0)
        assert joints_drawn(page) < all_drawn
        assert page.evaluate("() => document.getElementById('canvas').toDataURL()") != drawing_at_default
        page.fill("#threshold", str(health["model"]["threshold"]))
        assert visible_count(page) == at_default
        assert_drew(page, reply, sides, health["model"]["threshold"])
        assert page.inner_text("#threshold-value") == f"{health['model']['threshold']:.2f}"
        assert requests == [], "moving the slider sent a request"

        # downloads: the drawing as PNG and the reply as JSON, both at the slider's threshold
        with page.expect_download() as download:
            page.click("#download-png")
        assert png_size(Path(download.value.path()).read_bytes()) == (1000, 667)
        with page.expect_download() as download:
            page.click("#download-json")
        reply = json.loads(Path(download.value.path()).read_text())
        assert download.value.suggested_filename == "pose-pose.json"
        assert [j["name"] for j in reply["joints"]] == joints
        assert sum(j["visible"] for j in reply["joints"]) == at_default
        assert reply["people"][0]["joints"] == reply["joints"]  # every person at the slider's threshold too
        assert reply["threshold"] == health["model"]["threshold"]

        OUT.mkdir(exist_ok=True)
        page.evaluate("() => document.activeElement.blur()")
        page.mouse.move(0, 0)
        page.screenshot(path=str(OUT / "web-screenshot.png"), full_page=True)
        assert page.problems == []


def test_every_person_drawn_and_picked_on_the_photo(server, browser):
    """Pilots.jpg through the real server and its person detector: a box and a number per person,
    a click on the photo picks a person for the joints table, the slider redraws everyone."""
    base, health = server
    if health.get("detector") is None:
        pytest.skip("the server has no person detector (models/rtmdet-nano.onnx absent): "
                    "it answers one person per photo, so there is nobody else to pick")
    t = health["model"]["threshold"]
    with open_page(browser, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"{base}/")
        page.wait_for_selector("#api-status[data-state=ready]")
        with page.expect_response(lambda r: urlsplit(r.url).path == "/pose") as answer:
            page.set_input_files("#file", PEOPLE_PHOTO)
        wait_for_result(page)
        reply = answer.value.json()
        people = reply["people"]
        assert len(people) >= 2, f"the detector found {len(people)} of Pilots.jpg's three people"

        # the list: one button per person, best first, with its score and visible joints
        items = page.locator("#people li")
        assert items.count() == len(people)
        for i, person in enumerate(people):
            assert items.nth(i).inner_text().startswith(str(i + 1))
            assert f"score {person['score']:.2f}" in items.nth(i).inner_text()
        assert listed_visible(page) == [sum(j["score"] >= t for j in p["joints"]) for p in people]
        assert page.inner_text("#people-count") == f"{len(people)} people"
        assert page.inner_text("#picked-number") == "1"
        assert_table_shows(page, people[0]["joints"], t)
        sides = health["model"]["sides"]
        assert_picked_label_painted(page, assert_drew(page, reply, sides, t, picked=0))  # person 1 at first

        # a click on person 2's body (a point whose smallest box is theirs) shows their joints
        candidates = sorted(people[1]["joints"], key=lambda j: -j["score"])
        point = next(((j["x"], j["y"]) for j in candidates if smallest_box_at(people, j["x"], j["y"]) == 1), None)
        assert point, "no joint of person 2 lies in a box of theirs smaller than the others"
        requests = []
        page.on("request", lambda r: "/pose" in r.url and requests.append(r.url))
        click_photo(page, reply, *point)
        assert page.inner_text("#picked-number") == "2"
        assert_table_shows(page, people[1]["joints"], t)
        assert page.get_attribute("#people li:nth-child(2) button", "aria-pressed") == "true"
        assert page.get_attribute("#people li:nth-child(1) button", "aria-pressed") == "false"
        assert_picked_label_painted(page, assert_drew(page, reply, sides, t, picked=1))  # theirs is highlighted
        assert "around person 2" in page.inner_text("#model-facts") or people[1]["region"] is None
        OUT.mkdir(exist_ok=True)
        page.mouse.move(0, 0)
        page.screenshot(path=str(OUT / "web-people.png"), full_page=True)

        # the slider redraws every person: at 0 every joint is a dot, at 1 only those scoring 1
        page.focus("#threshold")
        page.keyboard.press("Home")
        assert listed_visible(page) == [len(p["joints"]) for p in people]
        assert_dots_painted(page, assert_drew(page, reply, sides, 0.0, picked=1))
        assert joints_drawn(page) == sum(len(p["joints"]) for p in people)
        page.screenshot(path=str(OUT / "web-people-threshold-0.png"))
        page.keyboard.press("End")
        assert listed_visible(page) == [sum(j["score"] >= 1 for j in p["joints"]) for p in people]
        assert_drew(page, reply, sides, 1.0, picked=1)
        assert_table_shows(page, people[1]["joints"], 1.0)  # still person 2's joints
        page.fill("#threshold", "0.3")
        assert listed_visible(page) == [sum(j["score"] >= 0.3 for j in p["joints"]) for p in people]
        assert_drew(page, reply, sides, 0.3, picked=1)
        assert_table_shows(page, people[1]["joints"], 0.3)

        # the list picks too; a click outside every box keeps the pick
        page.click(f"#people li:nth-child({len(people)}) button")
        assert page.inner_text("#picked-number") == str(len(people))
        assert_table_shows(page, people[-1]["joints"], 0.3)
        assert_picked_label_painted(page, assert_drew(page, reply, sides, 0.3, picked=len(people) - 1))
        outside = next(((x, y) for x in (0, reply["image"]["width"] - 1) for y in (0, reply["image"]["height"] - 1)
                        if smallest_box_at(people, x, y) == -1), None)
        if outside:
            click_photo(page, reply, *outside)
            assert page.inner_text("#picked-number") == str(len(people))
        assert requests == [], "picking or moving the slider sent a request"
        assert page.problems == []


def test_an_older_one_person_reply_without_people_still_shows(server, browser):
    """A cached API from before `people`: the real reply with only the one-person fields is one person."""
    base, health = server
    old_fields = ("joints", "keypoints", "skeleton", "image", "model", "threshold", "timings_ms", "region")
    replies = []

    def older(route):
        response = route.fetch()
        reply = {k: v for k, v in response.json().items() if k in old_fields}
        replies.append(reply)
        route.fulfill(response=response, body=json.dumps(reply))

    with open_page(browser, accept_downloads=True) as page:
        page.route(f"{base}/pose", older)
        page.goto(f"{base}/")
        page.wait_for_selector("#api-status[data-state=ready]")
        page.set_input_files("#file", PEOPLE_PHOTO)
        wait_for_result(page)
        (reply,) = replies
        t = health["model"]["threshold"]
        assert page.locator("#people li").count() == 1
        assert "score –" in page.inner_text("#people li")
        assert page.inner_text("#people-count") == "1 person"
        assert_table_shows(page, reply["joints"], t)
        assert_drew(page, reply, health["model"]["sides"], t)
        assert "Detector" not in page.inner_text("#model-facts")
        click_photo(page, reply, reply["image"]["width"] / 2, reply["image"]["height"] / 2)  # no box: nothing to pick
        page.focus("#threshold")
        page.keyboard.press("Home")
        assert listed_visible(page) == [len(reply["joints"])] and visible_count(page) == len(reply["joints"])
        assert_drew(page, reply, health["model"]["sides"], 0.0)
        with page.expect_download() as download:
            page.click("#download-json")
        saved = json.loads(Path(download.value.path()).read_text())
        assert "people" not in saved and all(j["visible"] for j in saved["joints"])
        assert page.problems == []


def test_page_logic_people_and_picking(server, browser):
    """web/draw.js's rules in the page's own browser: peopleOf for both reply shapes, personAt."""
    base, _ = server
    with open_page(browser) as page:
        page.goto(f"{base}/")
        result = page.evaluate("""async () => {
            const { peopleOf, personAt } = await import("./draw.js");
            const joints = [{ name: "nose", x: 5, y: 5, score: 0.9 }];
            const box = (left, top, width, height) => ({ left, top, width, height });
            const people = [
                { score: 0.9, box: box(0, 0, 100, 100), joints },  // big, best
                { score: 0.8, box: box(40, 40, 20, 20), joints },  // small, inside the big one
                { score: 0.7, box: box(50, 50, 30, 30), joints },  // overlaps the small one
                { score: 0.6, box: null, joints },  // no box: never under a click
            ];
            return {
                old: peopleOf({ joints, keypoints: [5, 5, 2], region: null }),
                none: peopleOf({ people: [], joints: [] }).length,
                same: peopleOf({ people, joints }) === people,
                at: [[10, 10], [45, 45], [55, 55], [70, 70], [60, 60], [100, 100], [100.5, 50], [-1, 0]]
                    .map(([x, y]) => personAt(people, x, y)),
                empty: personAt([], 1, 1),
            };
        }""")
    assert result["old"] == [{"score": None, "box": None, "joints": [{"name": "nose", "x": 5, "y": 5, "score": 0.9}],
                              "keypoints": [5, 5, 2], "region": None}]
    assert result["none"] == 0 and result["same"] is True
    # the smallest box holding the point wins; edges belong to the box; outside every box: -1
    assert result["at"] == [0, 1, 1, 2, 1, 0, -1, -1]
    assert result["empty"] == -1


def test_phone_layout_and_keyboard_upload(server, browser):
    base, health = server
    with open_page(browser, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                   is_mobile=True, has_touch=True) as page:
        page.goto(f"{base}/")
        # keyboard only: Tab reaches "Choose a photo…" first
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == "pick"
        # what the busy indicator showed while uploading (too quick locally to poll for)
        page.evaluate("""() => {
            window.busyLog = [];
            const busy = document.getElementById("busy");
            new MutationObserver(() => window.busyLog.push({
                shown: !busy.hidden, pickDisabled: document.getElementById("pick").disabled,
                ariaBusy: document.getElementById("result").getAttribute("aria-busy"),
            })).observe(busy, { attributes: true, attributeFilter: ["hidden"] });
        }""")
        # Enter on the button opens the file input's chooser (caught here: native choosers are
        # flaky in headless Chromium after other contexts), then the file goes in the same input.
        page.evaluate("""() => document.getElementById("file").addEventListener("click", (event) => {
            window.chooserOpened = true;
            event.preventDefault();
        }, { once: true })""")
        page.keyboard.press("Enter")
        assert page.evaluate("() => window.chooserOpened") is True
        page.set_input_files("#file", PHOTO)
        wait_for_result(page)
        assert page.evaluate("() => window.busyLog") == [
            {"shown": True, "pickDisabled": True, "ariaBusy": "true"},
            {"shown": False, "pickDisabled": False, "ariaBusy": "false"},
        ]
        assert page.locator("#joints tbody tr").count() == len(health["model"]["joints"])
        # nothing wider than the screen
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        assert page.locator("#canvas").bounding_box()["width"] <= 390
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / "web-screenshot-phone.png"), full_page=True)
        assert page.problems == []


def test_camera_photo(server, playwright):
    """Chromium's fake camera (a test pattern): capture -> the same upload path."""
    base, health = server
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + FAKE_CAMERA_ARGS)
    try:
        with open_page(browser, viewport={"width": 1024, "height": 800}) as page:
            page.context.grant_permissions(["camera"], origin=base)
            page.goto(f"{base}/")
            page.click("#camera-open")
            page.wait_for_selector("#camera[open]")
            page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
            page.click("#camera-shoot")
            wait_for_result(page)
            assert page.is_hidden("#camera")
            assert page.locator("#joints tbody tr").count() == len(health["model"]["joints"])
            assert page.inner_text("#photo-name").startswith("camera-")
            assert page.problems == []
    finally:
        browser.close()


def test_big_rotated_photo_is_shrunk_and_turned_upright_before_upload(server, browser, tmp_path):
    """A 2400x1601 JPEG whose EXIF says "rotate 90°" (as phones write): sent upright, 1280 px long."""
    from PIL import Image

    big = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90° clockwise to be upright
    Image.open(PHOTO).resize((2400, 1601)).save(big, quality=92, exif=exif)
    with open_page(browser) as page:
        page.goto(f"{base_of(server)}/")
        with page.expect_request(lambda r: urlsplit(r.url).path == "/pose") as sent:
            page.set_input_files("#file", big)
        wait_for_result(page)
        body = json.loads(sent.value.post_data)
        assert body["image"].startswith("data:image/jpeg;base64,")
        assert body["return_image"] is False
        size = page.evaluate("() => [document.getElementById('canvas').width, document.getElementById('canvas').height]")
        assert size == [854, 1280]
        assert "854×1280" in page.inner_text("#model-facts")


# --- failures, each with its own message -----------------------------------------------------

@pytest.mark.parametrize("name, mime", [("notes.txt", "text/plain"), ("fake.jpg", "image/jpeg")])
def test_a_file_that_is_not_an_image(server, browser, name, mime):
    base, _ = server
    with open_page(browser) as page:
        page.goto(f"{base}/")
        requests = []
        page.on("request", lambda r: "/pose" in r.url and requests.append(r.url))
        page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": b"just some text\n"}])
        error = page.locator("#error")
        error.wait_for(state="visible")
        assert error.get_attribute("data-kind") == "not_image"
        assert error.get_attribute("role") == "alert"
        assert "not an image" in error.inner_text()
        assert name in error.inner_text()
        assert page.is_enabled("#pick")
        assert requests == []


@pytest.mark.parametrize("status, body, kind, words", [
    (413, {"message": "Request Too Long"}, "too_large", "too large"),  # API Gateway's own 413
    (415, {"error": {"code": "unsupported_image", "message": "not an image"}}, "not_image", "not an image"),
    (429, {"message": "Too Many Requests"}, "throttled", "Too many requests"),
    (429, {"message": "Limit Exceeded"}, "quota", "quota"),  # the usage plan's daily quota
    (403, {"message": "Forbidden"}, "api_key", "needs a valid key"),
    (403, {"message": "Missing Authentication Token"}, "not_found", "address looks wrong"),  # an unknown route
    (500, {"error": {"code": "internal_error", "message": "internal error", "request_id": "r-1"}}, "server", "server failed"),
    (504, {"message": "Endpoint request timed out"}, "server", "timed out"),
])
def test_api_errors_are_explained(server, browser, status, body, kind, words):
    base, _ = server
    with open_page(browser) as page:
        page.route(f"{base}/pose", lambda route: route.fulfill(status=status, content_type="application/json",
                                                               body=json.dumps(body)))
        page.goto(f"{base}/")
        page.set_input_files("#file", PHOTO)
        page.wait_for_selector("#result[data-state=error]")
        error = page.locator("#error")
        assert error.get_attribute("data-kind") == kind
        assert words in error.inner_text()
        assert page.is_visible("#canvas") and drawn(page) == []  # the photo stays, without a skeleton


API_KEY = "local-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory):
    """A second local API, on another origin, that requires API_KEY (a RequireApiKey=true stack):
    (base URL, its request log)."""
    logs = tmp_path_factory.mktemp("serve-keyed")
    with local_server(log_dir=logs, api_key=API_KEY, log_requests=True) as (_process, base):
        yield f"{base}/", logs / "stderr.log"


@contextmanager
def published_page(api_base: str, api_key: str, folder: Path):
    """The page exactly as web/deploy.py publishes it for `api_base` (and key), served from its own
    loopback origin by a plain static server: no request interception, so the browser's CORS
    preflights really reach the API."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    for key, (body, _type) in load_deploy().site_files(api_base, api_key).items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(body)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    static = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{static.server_address[1]}/"
    finally:
        static.shutdown()
        static.server_close()


@pytest.mark.parametrize("key, works", [(API_KEY, True), ("", False), ("wrong-key", False)])
def test_api_that_requires_a_key(browser, keyed_api, key, works, tmp_path):
    """The page sends config.json's apiKey; the cross-origin preflight passes without one."""
    api, log = keyed_api
    logged = len(log.read_text())
    with published_page(api, key, tmp_path) as site, open_page(browser) as page:
        page.context.grant_permissions(["local-network-access"])
        posts = []
        page.on("request", lambda r: r.method == "POST" and urlsplit(r.url).path == "/pose" and posts.append(r))
        page.goto(site)
        page.wait_for_selector(f"#api-status[data-state={'ready' if works else 'error'}]")
        page.set_input_files("#file", PHOTO)
        page.wait_for_selector("#result[data-state=done], #result[data-state=error]")
        (post,) = posts
        assert post.headers.get("x-api-key") == (key or None)
        # The browser's preflight (which never carries the key) passed; then the key decided.
        requests = log.read_text()[logged:]
        assert re.search(r'"OPTIONS /pose HTTP/1\.1" 20[04]', requests), requests
        assert f'"POST /pose HTTP/1.1" {200 if works else 403}' in requests, requests
        if works:
            assert page.get_attribute("#result", "data-state") == "done"
            assert visible_count(page) > 0
            assert page.problems == []
        else:
            assert page.get_attribute("#error", "data-kind") == "api_key"
            assert "needs a valid key" in page.inner_text("#error")
            assert "apiKey" in page.inner_text("#error")


def test_api_unreachable(server, browser):
    base, _ = server
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    with open_page(browser) as page:
        point_page_at(page, base, dead)
        page.goto(f"{base}/")
        page.wait_for_selector("#api-status[data-state=error]")
        page.set_input_files("#file", PHOTO)
        page.wait_for_selector("#result[data-state=error]")
        error = page.locator("#error")
        assert error.get_attribute("data-kind") == "unreachable"
        assert "unreachable" in error.inner_text()
        assert dead.rstrip("/") in error.inner_text()


class NoCorsAPI(BaseHTTPRequestHandler):
    """An API on another origin that answers but sends no CORS headers."""

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_OPTIONS = _answer


def test_api_without_cors(server, browser):
    base, _ = server
    other = ThreadingHTTPServer(("127.0.0.1", 0), NoCorsAPI)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{other.server_address[1]}/Prod/"
        with open_page(browser) as page:
            point_page_at(page, base, api)
            page.goto(f"{base}/")
            page.set_input_files("#file", PHOTO)
            page.wait_for_selector("#result[data-state=error]")
            error = page.locator("#error")
            assert error.get_attribute("data-kind") == "cors"
            assert "CORS" in error.inner_text()
            assert base in error.inner_text()  # names the origin to allow
    finally:
        other.shutdown()
        other.server_close()


def test_csp_blocks_an_api_it_does_not_list(server, browser):
    """config.json names another origin but the page's CSP was not updated (not deployed by deploy.py)."""
    base, _ = server
    with open_page(browser) as page:
        page.route(f"{base}/config.json", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps({"apiBaseUrl": "https://api.example.com/Prod/"})))
        page.goto(f"{base}/")
        page.set_input_files("#file", PHOTO)
        page.wait_for_selector("#result[data-state=error]")
        assert page.get_attribute("#error", "data-kind") == "csp"
        assert "https://api.example.com" in page.inner_text("#error")

