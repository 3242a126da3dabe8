"""Frames of a clip in order -> the people of each frame, each with a `track_id` that stays with the person.

As Simple Baselines' tracker (Xiao et al. 2018, "for Human Pose Estimation and Tracking"):

- on a detection frame (every `detect_every`-th, and the frame after tracking was unsure) the people are those
  of the photo pipeline (pipeline.estimate_people), matched greedily to the tracks: the pair most alike first,
  alike meaning OKS of the joints both placed, combined with box IoU (`similarity`), and only from
  `min_similarity` up; a person matched to no track starts a new one (a new id);
- only people scored at least `min_score` are tracked, and of people whose joints agree (OKS above
  `duplicate_oks`: two crops of one person, or two boxes that converged on one) the better-scored one;
  optionally (`keep_score`, off by default) with hysteresis: a track starts only from a person scored
  `min_score` or more on a detection frame, and a person matched to a live track is kept down to `keep_score`;
- on the other frames the detector is skipped: each track seen on the previous frame gives a box, the extent
  of its joints widened (`follow_box`), and the pose model looks there alone (pipeline.people_in_boxes); the
  people found are matched to the tracks as on a detection frame, without starting any: where two people
  cross, a box may hold the other person, who then keeps their own id rather than take the box's;
- a person seen on a followed frame is reported with the score of their track's last detection frame: a
  followed box is given, not detected, so the pose model's joints alone score it, on another scale than the
  photo pipeline's (detector x joints); one scale through the clip keeps its people comparable (COCO keypoint AP
  ranks all of a clip's people together: docs/video.md). Tracking decisions use the followed score itself;
- a followed box where the pose model places too few joints (`follow_box` None) holds nobody: that person is
  not reported on this frame. Tracking is unsure, and the next frame is a detection frame, when fewer people
  were found than tracks were followed, or one of them scored under `unsure_score`;
- each track keeps a velocity (the mean move of its joints), so that it is looked for, and matched, where the
  person should be now (`Track.expected`): after an occlusion, and on fast moves;
- a track not seen is kept `keep_missing` frames (a short occlusion) so that the person gets their id back when
  a detection finds them again; after that it ends and its id is never reused;
- optionally (`smooth`, off by default) the joints a track reports are filtered in time by a One Euro filter
  (Casiez et al. 2012): jitter is damped at low speed while fast moves are followed; matching and box
  propagation keep the raw joints.

State is the live tracks only (their last person and filter), so memory follows one frame, never the clip.
`Tracker.to_state` / `Tracker.load_state` carry it as plain JSON between the requests of POST /track, which
tracks a clip a few frames at a time: a clip tracked in pieces, the state carried, gets exactly the ids and
joints of one Tracker over all its frames. A state that comes back is checked strictly (StateError).
The matching (`Tracks`) is plain numpy on Person records; `Tracker` adds the models through two callables,
so both are tested without a model (tests/test_track.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from .detect import iou_matrix
from .errors import BadRequest
from .model import PoseModel
from .pipeline import MAX_PEOPLE, Detector, People, Person, estimate_people, oks, oks_nms, people_in_boxes
from .region import MIN_JOINTS, MIN_SCORE, in_photo

Box = tuple[float, float, float, float]
STATE_VERSION = 2  # of to_state's JSON; load_state refuses any other
MAX_STATE_TRACKS = 256  # live tracks a state may carry (20 people a frame, each kept 10 frames unseen, fits)
MAX_STATE_NUMBER = 1e6  # every coordinate, velocity and score of a state lies within +/- this
MAX_STATE_COUNT = 10**9  # frame counter and ids
VELOCITY_BLEND = 0.5  # a track's velocity: this much of the last move, the rest of the velocity before
FOLLOW_MARGIN = 1.2  # a followed box is the joints' extent this much larger (head top and feet lie past the joints)


@dataclass(frozen=True)
class TrackOptions:
    detect_every: int = 5  # a detection frame every this many frames (1: every frame)
    keep_missing: int = 10  # frames a track outlives its last sighting (a short occlusion)
    min_similarity: float = 0.3  # a person and a track are matched from this similarity up
    oks_weight: float = 0.5  # similarity = oks_weight x OKS + (1 - oks_weight) x box IoU
    unsure_score: float = 0.5  # a followed person scored under this makes the next frame a detection frame
    min_score: float = 0.3  # people scored under this are not tracked (nor reported): the detector's doubts
    keep_score: float | None = None  # ... unless matched to a live track and scored this much (None: min_score)
    duplicate_oks: float = 0.5  # a person whose joints agree this much (OKS) with a better-scored one is them
    smooth: bool = False  # One Euro filter on the reported joints
    min_cutoff: float = 1.0  # One Euro: the cutoff (Hz) at rest ...
    beta: float = 0.01  # ... raised by this much per pixel per second of joint speed

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.keep_missing < 0:
            raise ValueError("detect_every must be >= 1 and keep_missing >= 0")
        if self.keep_score is not None and self.keep_score > self.min_score:
            raise ValueError("keep_score must be at most min_score")

    @property
    def kept_from(self) -> float:
        """The least score of a person the tracker considers: keep_score, or min_score when it is unset."""
        return self.min_score if self.keep_score is None else self.keep_score


@dataclass
class TrackedPerson:
    person: Person
    track_id: int


@dataclass
class TrackedFrame:
    people: list[TrackedPerson]  # the people seen on this frame, best score first
    detected: bool  # whether the detector ran on it
    timings_ms: dict[str, float] = field(default_factory=dict)


class OneEuro:
    """A One Euro filter over arrays of positions: each element low-passed with a cutoff that rises with its
    speed (min_cutoff + beta x |speed|), so slow jitter is smoothed and fast moves lag little."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None
        self.time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.value is None or self.time is None or time_s <= self.time:
            self.value, self.speed, self.time = value, np.zeros_like(value), time_s
            return value
        dt = time_s - self.time
        speed = (value - self.value) / dt
        a = self._alpha(self.d_cutoff, dt)
        self.speed = a * speed + (1 - a) * self.speed
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.speed), dt)
        self.value, self.time = a * value + (1 - a) * self.value, time_s
        return self.value


@dataclass
class Track:
    track_id: int
    person: Person  # the last person seen (raw joints)
    missing: int = 0  # frames since it was last seen
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # pixels per frame, of the joints' centre
    filter: OneEuro | None = None
    score: float = 0.0  # the person's score on the track's last detection frame (what it reports when followed)

    def expected(self) -> Person:
        """Where the person should be on the next frame: the last person moved on at their velocity over the
        frames since (so a walker seen again after an occlusion is looked for where they went, not where
        they were hidden)."""
        shift = self.velocity * (self.missing + 1)
        x0, y0, x1, y1 = self.person.box
        return replace(self.person, points=self.person.points + shift,
                       box=(x0 + shift[0], y0 + shift[1], x1 + shift[0], y1 + shift[1]))


def similarity(track: Person, person: Person, oks_weight: float) -> float:
    """How alike a track's last person and a new one are: OKS over the joints both placed with some
    confidence (0 when fewer than MIN_JOINTS are), combined with their boxes' IoU."""
    both = (track.scores >= MIN_SCORE) & (person.scores >= MIN_SCORE)
    pose = oks(track, person, both) if int(both.sum()) >= MIN_JOINTS else 0.0
    overlap = float(iou_matrix(np.array([track.box]), np.array([person.box]))[0, 0])
    return oks_weight * pose + (1 - oks_weight) * overlap


def follow_box(person: Person, width: int, height: int) -> Box | None:
    """Where to look for `person` on the next frame: the extent of their joints placed with some confidence
    on the photo, FOLLOW_MARGIN larger about its centre; None when fewer than MIN_JOINTS are (lost)."""
    sure = person.points[(person.scores >= MIN_SCORE) & in_photo(person.points, width, height)]
    if len(sure) < MIN_JOINTS:
        return None
    (x0, y0), (x1, y1) = sure.min(axis=0), sure.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * FOLLOW_MARGIN / 2, (y1 - y0) * FOLLOW_MARGIN / 2
    return (float(cx - w), float(cy - h), float(cx + w), float(cy + h))


class Tracks:
    """The live tracks and the id counter: matching people to them, ageing the unseen, ending the old."""

    def __init__(self, options: TrackOptions = TrackOptions()):
        self.options = options
        self.live: list[Track] = []
        self.next_id = 1

    def match(self, people: Sequence[Person], time_s: float = 0.0, start: bool = True) -> list[TrackedPerson]:
        """A frame's people -> each with a track id: greedy on similarity, best pair first, from min_similarity
        up; an unmatched track ages. With `start` (a detection frame) an unmatched person scored min_score or
        more starts a new track and each person's score becomes their track's; an unmatched person is otherwise
        left out, and on a followed frame each is reported with their track's score."""
        expected = [t.expected() for t in self.live]
        pairs = sorted(((similarity(e, p, self.options.oks_weight), ti, pi)
                        for ti, e in enumerate(expected) for pi, p in enumerate(people)), reverse=True)
        owner: dict[int, Track] = {}
        taken: set[int] = set()
        for value, ti, pi in pairs:
            if value < self.options.min_similarity:
                break
            if ti not in taken and pi not in owner:
                owner[pi] = self.live[ti]
                taken.add(ti)
        for pi, person in enumerate(people):
            if pi not in owner and start and person.score >= self.options.min_score:
                owner[pi] = self._start(person)
        return self._seen([(owner[pi], p) for pi, p in enumerate(people) if pi in owner], time_s, start)

    def followed(self) -> list[Track]:
        """The tracks seen on the last frame: those whose boxes the next frame looks in."""
        return [t for t in self.live if t.missing == 0]

    def _start(self, person: Person) -> Track:
        track = Track(self.next_id, person, missing=-1)
        self.next_id += 1
        self.live.append(track)
        return track

    def _seen(self, found: list[tuple[Track, Person]], time_s: float, detected: bool) -> list[TrackedPerson]:
        out = []
        for track, person in found:
            if track.person is not person:  # not a track started on this frame
                track.velocity = _velocity(track, person)
                track.person, track.missing = person, -1  # -1: seen now, 0 once every track has aged below
            if detected:
                track.score = person.score
            out.append(TrackedPerson(replace(self._reported(track, person, time_s), score=track.score),
                                     track.track_id))
        for track in self.live:
            track.missing += 1
        self.live = [t for t in self.live if t.missing <= self.options.keep_missing]
        return sorted(out, key=lambda tp: -tp.person.score)

    def _reported(self, track: Track, person: Person, time_s: float) -> Person:
        if not self.options.smooth:
            return person
        if track.filter is None:
            track.filter = OneEuro(self.options.min_cutoff, self.options.beta)
        return replace(person, points=track.filter(person.points, time_s))


def _velocity(track: Track, person: Person) -> np.ndarray:
    """The track's velocity (pixels per frame) updated with `person`, seen track.missing + 1 frames after its
    last sighting: the mean move of the joints placed with some confidence in both, blended with the old
    velocity (VELOCITY_BLEND); the old one when fewer than MIN_JOINTS are placed in both."""
    both = (track.person.scores >= MIN_SCORE) & (person.scores >= MIN_SCORE)
    if int(both.sum()) < MIN_JOINTS:
        return track.velocity
    move = (person.points[both] - track.person.points[both]).mean(axis=0) / (track.missing + 1)
    return VELOCITY_BLEND * move + (1 - VELOCITY_BLEND) * track.velocity


class Tracker:
    """A clip's frames, one `step` each, in order -> TrackedFrame. `detect_all(rgb)` is the photo pipeline's
    people (the detector's boxes); `look_in(rgb, boxes)` the people the pose model finds in given boxes, one
    per box, in order (pipeline.people_in_boxes). `follows_boxes` False (a model that finds the people
    itself): every frame is a detection frame."""

    def __init__(self, detect_all: Callable[[np.ndarray], People],
                 look_in: Callable[[np.ndarray, list[Box]], People],
                 options: TrackOptions = TrackOptions(), follows_boxes: bool = True):
        self.detect_all, self.look_in = detect_all, look_in
        self.options, self.follows_boxes = options, follows_boxes
        self.tracks = Tracks(options)
        self.index = 0
        self.unsure = True  # the first frame is a detection frame

    def step(self, rgb: np.ndarray, time_s: float) -> TrackedFrame:
        height, width = rgb.shape[:2]
        followed = self.tracks.followed()
        boxes = [(t, b) for t in followed if (b := follow_box(t.expected(), width, height)) is not None]
        lost = len(boxes) < len(followed)
        detect = (not self.follows_boxes or self.unsure or lost or not boxes
                  or self.index % self.options.detect_every == 0)
        self.index += 1
        if detect:
            found = self.detect_all(rgb)
            self.unsure = False
            return TrackedFrame(self.tracks.match(self._trackable(found.people), time_s), True, found.timings_ms)
        found = self.look_in(rgb, [b for _, b in boxes])
        placed = [replace(p, box=box) for p in found.people if (box := follow_box(p, width, height)) is not None]
        people = self._trackable(placed)
        tracked = self.tracks.match(people, time_s, start=False)
        self.unsure = len(tracked) < len(followed) or any(p.score < self.options.unsure_score for p in people)
        return TrackedFrame(tracked, False, found.timings_ms)

    def to_state(self) -> dict:
        """What the next frame depends on, as plain JSON (load_state takes it back): the frame counter and
        whether tracking is unsure (the detect-every-k schedule), the next id, and each live track's id,
        frames unseen, velocity, score on its last detection frame (`detected_score`: what it reports when
        followed) and last person (score, box, joints, joint scores; not the region the model looked at,
        which matching never reads). Floats are written in full, so the round trip is exact.
        A smoothing tracker's filters are not carried: ValueError."""
        if self.options.smooth:
            raise ValueError("a smoothing tracker's state is not carried (its One Euro filters)")
        return {"version": STATE_VERSION, "frame": self.index, "unsure": self.unsure,
                "next_id": self.tracks.next_id,
                "tracks": [{"id": t.track_id, "missing": t.missing, "velocity": t.velocity.tolist(),
                            "detected_score": float(t.score), "score": float(t.person.score), "box": [float(v) for v in t.person.box],
                            "points": t.person.points.tolist(), "scores": t.person.scores.tolist()}
                           for t in self.tracks.live]}

    def load_state(self, state: object, joints: int) -> None:
        """Take up where to_state left off, on a model of `joints` joints. StateError (a BadRequest) when
        `state` is not what to_state writes: wrong types or lengths, a number not finite or over
        MAX_STATE_NUMBER, ids not below next_id or repeated, over MAX_STATE_TRACKS tracks. Nothing changes
        unless the whole state is valid."""
        doc = _fields(state, "the state", {"version", "frame", "unsure", "next_id", "tracks"})
        if doc["version"] != STATE_VERSION or isinstance(doc["version"], bool):
            raise StateError(f"the state's version must be {STATE_VERSION}")
        frame = _count(doc["frame"], "the state's frame", 0)
        next_id = _count(doc["next_id"], "the state's next_id", 1)
        if not isinstance(doc["unsure"], bool):
            raise StateError("the state's unsure must be true or false")
        if not isinstance(doc["tracks"], list) or len(doc["tracks"]) > MAX_STATE_TRACKS:
            raise StateError(f"the state's tracks must be a list of at most {MAX_STATE_TRACKS}")
        live = [self._track_of(item, k, joints, next_id) for k, item in enumerate(doc["tracks"])]
        if len({t.track_id for t in live}) < len(live):
            raise StateError("the state's track ids must differ")
        self.index, self.unsure = frame, doc["unsure"]
        self.tracks.next_id, self.tracks.live = next_id, live

    def _track_of(self, item: object, k: int, joints: int, next_id: int) -> Track:
        what = f"the state's track {k}"
        doc = _fields(item, what, {"id", "missing", "velocity", "detected_score", "score", "box", "points", "scores"})
        track_id = _count(doc["id"], f"{what}'s id", 1)
        if track_id >= next_id:
            raise StateError(f"{what}'s id must be below next_id")
        missing = _count(doc["missing"], f"{what}'s missing", 0)
        if missing > self.options.keep_missing:
            raise StateError(f"{what}'s missing must be at most {self.options.keep_missing}")
        box = _numbers(doc["box"], (4,), f"{what}'s box")
        if box[0] > box[2] or box[1] > box[3]:
            raise StateError(f"{what}'s box must have left <= right and top <= bottom")
        person = Person(_numbers(doc["points"], (joints, 2), f"{what}'s points"),
                        _numbers(doc["scores"], (joints,), f"{what}'s scores"),
                        float(_numbers(doc["score"], (), f"{what}'s score")), tuple(box.tolist()), None)
        return Track(track_id, person, missing, _numbers(doc["velocity"], (2,), f"{what}'s velocity"),
                     score=float(_numbers(doc["detected_score"], (), f"{what}'s detected_score")))

    def _trackable(self, people: Sequence[Person]) -> list[Person]:
        """The people worth a track: scored at least `kept_from` (Tracks.match starts tracks from min_score
        only), and not a duplicate of a better-scored one (two crops of one person, which the photo pipeline's
        stricter OKS_NMS keeps)."""
        return oks_nms([p for p in people if p.score >= self.options.kept_from], self.options.duplicate_oks)

class StateError(BadRequest):
    """A tracker state that is not what Tracker.to_state writes (POST /track answers it 400)."""


def _fields(value: object, what: str, names: set[str]) -> dict:
    if not isinstance(value, dict) or set(value) != names:
        raise StateError(f"{what} must be an object with exactly the fields {', '.join(sorted(names))}")
    return value


def _count(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_STATE_COUNT:
        raise StateError(f"{what} must be an integer in [{least}, {MAX_STATE_COUNT}]")
    return value


def _numbers(value: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Nested lists (or a number, shape ()) of finite numbers within MAX_STATE_NUMBER -> a float64 array."""
    def ok(v: object, depth: int) -> bool:
        if depth == len(shape):
            return not isinstance(v, bool) and isinstance(v, (int, float)) and abs(v) <= MAX_STATE_NUMBER
        return isinstance(v, list) and len(v) == shape[depth] and all(ok(x, depth + 1) for x in v)
    if not ok(value, 0):  # (abs(NaN) <= bound is false: NaN is refused too)
        dims = " x ".join(map(str, shape)) or "one"
        raise StateError(f"{what} must be {dims} finite number{'s' if shape else ''} within +/-{MAX_STATE_NUMBER:g}")
    return np.array(value, dtype=np.float64)


def model_tracker(pose: PoseModel, detector: Detector | None, options: TrackOptions = TrackOptions(),
                  max_people: int = MAX_PEOPLE) -> Tracker:
    """A Tracker on the served models: detection frames answered as POST /pose answers a photo, the other
    frames by the pose model in the followed boxes. A model that finds the people itself (``yolo_pose``) has
    no crops to follow: every frame is a detection frame."""
    return Tracker(lambda rgb: estimate_people(rgb, pose, detector, max_people),
                   lambda rgb, boxes: people_in_boxes(rgb, pose, boxes),
                   options, follows_boxes=pose.card.output.kind != "yolo_pose")
