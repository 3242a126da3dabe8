// A chosen, dropped, pasted or captured file -> a photo ready to send: decoded by the browser,
// turned upright (EXIF orientation), shrunk to at most MAX_SIDE px and re-encoded as JPEG.
// Re-encoding also drops the file's metadata (camera, location) before it leaves the device.

import { ProblemError } from "./api.js";

export const MAX_SIDE = 1280; // the API draws and answers at this size too
export const MAX_FILE_BYTES = 50 * 1024 * 1024; // what the browser is asked to decode at all
const MAX_UPLOAD_BYTES = 4_500_000; // the API's image limit
const JPEG_QUALITIES = [0.9, 0.8, 0.7, 0.5];

function megabytes(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function notAnImage(file) {
  const heic = /\.(heic|heif)$/i.test(file.name || "") || /hei[cf]/i.test(file.type || "");
  const hint = heic
    ? "HEIC photos cannot be opened by this browser: share or export the photo as JPEG and try again."
    : "Choose a JPEG, PNG or WebP photo.";
  const name = file.name ? `“${file.name}”` : "That file";
  return new ProblemError("not_image", `${name} is not an image this page can read.`, hint);
}

async function decode(file) {
  if (typeof createImageBitmap === "function") {
    try {
      return await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      // fall back to an <img>, which some browsers decode more formats with
    }
  }
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.decoding = "async";
    img.src = url;
    await img.decode();
    return img;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** Read one File; resolves to {canvas, width, height, dataUrl, bytes, name, originalWidth, originalHeight}. */
export async function loadPhoto(file) {
  if (!file) throw new ProblemError("no_file", "No file was chosen.", "Choose a photo to continue.");
  if (file.size === 0) throw new ProblemError("not_image", `“${file.name}” is empty.`, "Choose a JPEG, PNG or WebP photo.");
  if (file.type && !file.type.startsWith("image/")) throw notAnImage(file);
  if (file.size > MAX_FILE_BYTES) {
    throw new ProblemError("too_large", "The photo is too large.",
      `“${file.name}” is ${megabytes(file.size)}; this page opens photos up to ${megabytes(MAX_FILE_BYTES)}.`);
  }
  let source;
  try {
    source = await decode(file);
  } catch {
    throw notAnImage(file);
  }
  const originalWidth = source.width || source.naturalWidth;
  const originalHeight = source.height || source.naturalHeight;
  if (!originalWidth || !originalHeight) throw notAnImage(file);

  const scale = Math.min(1, MAX_SIDE / Math.max(originalWidth, originalHeight));
  const width = Math.max(1, Math.round(originalWidth * scale));
  const height = Math.max(1, Math.round(originalHeight * scale));
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // JPEG has no transparency: transparent PNG areas become white, not black
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, width, height);
  if (typeof source.close === "function") source.close();

  for (const quality of JPEG_QUALITIES) {
    const dataUrl = canvas.toDataURL("image/jpeg", quality);
    const bytes = Math.floor(((dataUrl.length - dataUrl.indexOf(",") - 1) * 3) / 4);
    if (bytes <= MAX_UPLOAD_BYTES) {
      return { canvas, width, height, dataUrl, bytes, name: file.name || "photo.jpg", originalWidth, originalHeight };
    }
  }
  throw new ProblemError("too_large", "The photo is too large.",
    `Even shrunk to ${width}×${height} px it is over the API's 4.5 MB limit.`);
}
