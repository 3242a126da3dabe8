// A clip -> its frames sent to POST /track a few at a time (the tracker's state carried from each reply to
// the next request) -> playback with every tracked person drawn over the video in sync with it, each track
// in its own colour (the API's), and the list of tracks. The tracking is all the API's.

import { trackFrames } from "./api.js";
import { FRAME_RATE, FRAME_SIDE, FRAMES_PER_REQUEST, MAX_CLIP_SECONDS, frameAt, openClip } from "./clip.js";
import { drawingOf, paintMarks, sidesFor, visibility } from "./draw.js";

/** What the page says of the clips it takes, from clip.js's limits. */
export function clipHint() {
  return `MP4 (H.264) or WebM, up to ${MAX_CLIP_SECONDS} s. The page sends ${FRAME_RATE} frames a second of it, `
    + `at most ${FRAME_SIDE} px, to the API, ${FRAMES_PER_REQUEST} at a time; the clip itself is not uploaded.`;
}

/** The tracks seen on `frames` (POST /track's): {id, color, frames, first, last} (times in s), by id. */
export function tracksOf(frames) {
  const tracks = new Map();
  for (const frame of frames) {
    const time = frame.index / FRAME_RATE;
    for (const person of frame.people) {
      const track = tracks.get(person.track_id)
        ?? { id: person.track_id, color: person.color, frames: 0, first: time, last: time };
      track.frames += 1;
      track.last = time;
      tracks.set(track.id, track);
    }
  }
  return [...tracks.values()].sort((a, b) => a.id - b.id);
}

/** The frame shown at a video time: the last one sent at or before it. */
export function frameIndexAt(time, count) {
  return Math.min(count - 1, Math.max(0, Math.floor(time * FRAME_RATE + 1e-3)));
}

/**
 * Wire the clip's section. `el`: {pick, file, hint, result, name, status, progress, video, canvas, tracks};
 * `api()`, `card()` and `threshold()` give the page's current API settings, model card and threshold;
 * `onStart()` runs when a clip is chosen, `onProblem(error)` on any failure. Returns {redraw}.
 */
export function setUpClip({ el, api, card, threshold, onStart, onProblem }) {
  let current = null; // {clip, frames, skeleton, sides}
  let shown = -1; // the frame drawn
  let request = 0; // a newer clip supersedes an older one still being tracked
  const scratch = document.createElement("canvas");
  el.hint.textContent = clipHint();

  function paint(force = false) {
    if (!current?.frames.length) return;
    const k = frameIndexAt(el.video.currentTime, current.frames.length);
    if (k === shown && !force) return;
    shown = k;
    const frame = current.frames[k];
    const visible = frame.people.map((person) => visibility(person.joints, threshold()));
    const marks = drawingOf(el.canvas, { skeleton: current.skeleton, image: frame.image }, frame.people,
      current.sides, visible, -1);
    const ctx = el.canvas.getContext("2d");
    ctx.clearRect(0, 0, el.canvas.width, el.canvas.height);
    paintMarks(ctx, marks);
    // What the canvas shows, as data (as for the photo): the browser tests read it.
    window.__drawn = marks;
    window.__drawnFrame = frame.index;
  }

  function follow() { // while playing, redraw at every animation frame the video has moved on
    paint();
    if (!el.video.paused && !el.video.ended) requestAnimationFrame(follow);
  }

  function listTracks(frames) {
    el.tracks.replaceChildren(...tracksOf(frames).map((track) => {
      const item = document.createElement("li");
      item.dataset.track = String(track.id);
      const id = document.createElement("span");
      id.className = "track-id";
      id.textContent = String(track.id);
      id.style.color = track.color;
      const seen = track.frames === 1 ? "1 frame" : `${track.frames} frames`;
      item.append(id, `${seen} · ${track.first.toFixed(1)}–${track.last.toFixed(1)} s`);
      return item;
    }));
  }

  function sidesOf(reply) {
    const names = reply.frames.flatMap((frame) => frame.people)[0]?.joints.map((joint) => joint.name) ?? [];
    const known = card();
    const fits = known && Array.isArray(known.joints) && known.joints.join() === names.join();
    return sidesFor(names, fits ? known.sides : null);
  }

  async function track(file) {
    const mine = ++request;
    onStart();
    current?.clip.close();
    current = null;
    shown = -1;
    el.result.hidden = false;
    el.result.dataset.state = "busy";
    el.tracks.replaceChildren();
    el.status.textContent = "Reading the clip…";
    el.progress.value = 0;
    const ctx = el.canvas.getContext("2d");
    ctx.clearRect(0, 0, el.canvas.width, el.canvas.height);
    try {
      const clip = await openClip(file);
      if (mine !== request) return clip.close();
      current = { clip, frames: [], skeleton: [], sides: [] };
      el.name.textContent = `${clip.name} · ${clip.duration.toFixed(1)} s`;
      el.canvas.width = clip.width;
      el.canvas.height = clip.height;
      el.video.src = clip.url;
      let state = null;
      for (let start = 0; start < clip.frameCount; start += FRAMES_PER_REQUEST) {
        const urls = [];
        for (let i = start; i < Math.min(start + FRAMES_PER_REQUEST, clip.frameCount); i += 1) {
          urls.push(await frameAt(clip, i, scratch));
        }
        const reply = await trackFrames(api(), urls, state, threshold());
        if (mine !== request) return undefined;
        if (!current.sides.length) Object.assign(current, { skeleton: reply.skeleton, sides: sidesOf(reply) });
        current.frames.push(...reply.frames);
        state = reply.state;
        el.progress.value = current.frames.length / clip.frameCount;
        el.status.textContent = `Tracking: ${current.frames.length} of ${clip.frameCount} frames sent…`;
        listTracks(current.frames);
        paint(true);
      }
      const count = tracksOf(current.frames).length;
      el.status.textContent = `${current.frames.length} frames tracked (${FRAME_RATE} a second): `
        + `${count === 1 ? "1 track" : `${count} tracks`}. Play the clip to see them.`;
      el.result.dataset.state = "done";
    } catch (error) {
      if (mine !== request) return undefined;
      el.result.dataset.state = "error";
      el.status.textContent = "The clip could not be tracked.";
      onProblem(error);
    }
    return undefined;
  }

  el.pick.addEventListener("click", () => el.file.click());
  el.file.addEventListener("change", () => {
    const [file] = el.file.files;
    el.file.value = "";
    if (file) track(file);
  });
  el.video.addEventListener("play", follow);
  for (const event of ["seeked", "timeupdate", "loadeddata", "pause", "ended"]) el.video.addEventListener(event, () => paint());
  return { redraw: () => paint(true) };
}
