// A chosen clip -> frames ready to send to POST /track: the browser decodes the video itself (a hidden
// <video> seeked to every 1/FRAME_RATE s, each frame drawn on a canvas at most FRAME_SIDE px and encoded as
// JPEG), so the API needs no video codec. The frames are made one at a time, as they are sent.

import { ProblemError } from "./api.js";

export const MAX_CLIP_SECONDS = 10; // what this page tracks: 100 frames, about a minute of the API's time
export const FRAME_RATE = 10; // frames per second of the clip sent (and drawn)
export const FRAME_SIDE = 960; // px: each frame's long side at most
export const FRAMES_PER_REQUEST = 5; // the API takes up to 10; 5 keep a request small and the progress moving
const JPEG_QUALITY = 0.85;

function notAClip(file) {
  const name = file?.name ? `“${file.name}”` : "That file";
  return new ProblemError("not_video", `${name} is not a clip this browser can play.`,
    "Choose an MP4 (H.264) or WebM clip.");
}

/** Wait for one of a media element's events; an `error` event rejects. */
function once(video, event) {
  return new Promise((resolve, reject) => {
    const done = () => { video.removeEventListener("error", failed); resolve(); };
    const failed = () => { video.removeEventListener(event, done); reject(new Error(`video ${event} failed`)); };
    video.addEventListener(event, done, { once: true });
    video.addEventListener("error", failed, { once: true });
  });
}

/**
 * Open a File as a clip: {name, url (a blob URL the page plays it from), video (the hidden element frames
 * are read from), duration, width, height (of the frames sent), frameCount}. A clip over
 * MAX_CLIP_SECONDS, or one the browser cannot decode, is a ProblemError. `close()` frees it.
 */
export async function openClip(file) {
  if (!file) throw new ProblemError("no_file", "No file was chosen.", "Choose a clip to continue.");
  if (file.type && !file.type.startsWith("video/")) throw notAClip(file);
  const url = URL.createObjectURL(file);
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.preload = "auto";
  video.src = url;
  try {
    await once(video, "loadeddata");
  } catch {
    URL.revokeObjectURL(url);
    throw notAClip(file);
  }
  const { duration, videoWidth, videoHeight } = video;
  const close = () => { video.removeAttribute("src"); video.load(); URL.revokeObjectURL(url); };
  if (!videoWidth || !videoHeight || !Number.isFinite(duration) || duration <= 0) {
    close();
    throw new ProblemError("not_video", `The length of “${file.name}” cannot be read.`,
      "Choose an MP4 (H.264) or WebM clip that has a duration.");
  }
  if (duration > MAX_CLIP_SECONDS + 0.05) {
    close();
    throw new ProblemError("too_long", `“${file.name}” is ${duration.toFixed(1)} s long.`,
      `This page tracks clips of up to ${MAX_CLIP_SECONDS} s: cut it shorter and try again.`);
  }
  const scale = Math.min(1, FRAME_SIDE / Math.max(videoWidth, videoHeight));
  return {
    name: file.name || "clip", url, video, duration, close,
    width: Math.max(1, Math.round(videoWidth * scale)),
    height: Math.max(1, Math.round(videoHeight * scale)),
    frameCount: Math.max(1, Math.floor(duration * FRAME_RATE - 1e-6) + 1),
  };
}

/** The clip's frame at `index` (time index / FRAME_RATE) as a JPEG data URL of the clip's frame size. */
export async function frameAt(clip, index, canvas) {
  const { video } = clip;
  const time = Math.min(index / FRAME_RATE, clip.duration);
  const seeked = once(video, "seeked"); // setting currentTime always seeks, to the same time too
  video.currentTime = time;
  await seeked;
  canvas.width = clip.width;
  canvas.height = clip.height;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(video, 0, 0, clip.width, clip.height);
  return canvas.toDataURL("image/jpeg", JPEG_QUALITY);
}
