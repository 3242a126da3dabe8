// Drawing a pose over its photo, and deciding which joints are visible at a threshold.
// The colours and proportions are the API's own annotated PNG's (handler/pose/draw.py).

export const COLORS = { left: "rgb(0, 200, 255)", right: "rgb(255, 80, 40)", center: "rgb(255, 220, 0)" };

/** One side per joint: the model card's `sides` when it fits, else guessed from the joint names. */
export function sidesFor(jointNames, cardSides) {
  if (Array.isArray(cardSides) && cardSides.length === jointNames.length) {
    return cardSides.map((side) => (side in COLORS ? side : "center"));
  }
  return jointNames.map((name) => {
    if (/^(l_|left)/i.test(name)) return "left";
    if (/^(r_|right)/i.test(name)) return "right";
    return "center";
  });
}

/** The API's rule: a joint is visible when its score is at least the threshold. */
export function visibility(joints, threshold) {
  return joints.map((joint) => joint.score >= threshold);
}

/**
 * Draw `photo` (a canvas of the uploaded image) on `canvas`, then the visible limbs and joints.
 * Joint coordinates are in the uploaded image's pixels (`imageSize`); pixel centres at integers.
 */
export function drawPose(canvas, photo, pose, sides, visible) {
  const { width, height } = photo;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0);
  if (!pose) return;
  const kx = width / (pose.image?.width || width);
  const ky = height / (pose.image?.height || height);
  const at = (joint) => [(joint.x + 0.5) * kx, (joint.y + 0.5) * ky];
  const size = Math.max(width, height);
  const lineWidth = Math.max(2, Math.round(size / 200));
  const radius = Math.max(3, Math.round(size / 120));
  const joints = pose.joints;

  ctx.lineCap = "round";
  ctx.lineWidth = lineWidth;
  for (const limb of pose.skeleton) {
    const [a, b] = limb.pair;
    if (!visible[a] || !visible[b]) continue;
    ctx.strokeStyle = COLORS[sides[a] === sides[b] ? sides[a] : "center"];
    ctx.beginPath();
    ctx.moveTo(...at(joints[a]));
    ctx.lineTo(...at(joints[b]));
    ctx.stroke();
  }
  ctx.lineWidth = Math.max(1, Math.floor(lineWidth / 2));
  ctx.strokeStyle = "#fff";
  joints.forEach((joint, i) => {
    if (!visible[i]) return;
    ctx.fillStyle = COLORS[sides[i]];
    ctx.beginPath();
    ctx.arc(...at(joint), radius, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  });
}
