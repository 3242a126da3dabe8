// Taking a photo with the device's camera (getUserMedia) in a modal dialog. Offered only where
// the browser allows it: a secure context (https or localhost) with media devices.

import { ProblemError } from "./api.js";

export function cameraAvailable() {
  return Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia && window.HTMLDialogElement);
}

function cameraProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new ProblemError("camera", "Camera access was not allowed.",
        "Allow the camera for this site in the browser's settings, or choose a photo instead.");
    case "NotFoundError":
    case "OverconstrainedError":
      return new ProblemError("camera", "No camera was found.", "Choose a photo instead.");
    case "NotReadableError":
      return new ProblemError("camera", "The camera is busy.", "Another app may be using it. Close it, or choose a photo instead.");
    default:
      return new ProblemError("camera", "The camera could not be started.", "Choose a photo instead.");
  }
}

/**
 * Wire the dialog. `onPhoto(file)` receives the captured JPEG; `onProblem(error)` any failure.
 * Returns a function that opens the camera.
 */
export function setUpCamera({ dialog, video, shoot, switchButton, cancel, onPhoto, onProblem }) {
  let stream = null;
  let facingMode = "environment"; // the back camera on a phone: for photographing someone else

  function stop() {
    stream?.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
  }

  async function start() {
    stop();
    stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode, width: { ideal: 1920 }, height: { ideal: 1080 } },
    });
    video.srcObject = stream;
    await video.play().catch(() => {});
  }

  async function open() {
    try {
      await start();
    } catch (error) {
      stop();
      onProblem(cameraProblem(error));
      return;
    }
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      switchButton.hidden = devices.filter((d) => d.kind === "videoinput").length < 2;
    } catch {
      switchButton.hidden = true;
    }
    dialog.showModal();
    shoot.focus();
  }

  shoot.addEventListener("click", () => {
    if (!video.videoWidth) return;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      dialog.close();
      if (blob) onPhoto(new File([blob], `camera-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.jpg`, { type: "image/jpeg" }));
    }, "image/jpeg", 0.92);
  });
  switchButton.addEventListener("click", async () => {
    facingMode = facingMode === "environment" ? "user" : "environment";
    try {
      await start();
    } catch (error) {
      dialog.close();
      onProblem(cameraProblem(error));
    }
  });
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", stop); // also on Escape

  return open;
}
