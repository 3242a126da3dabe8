// Drawing every person over the photo, deciding which joints are visible at a threshold, and
// finding the person under a click. The colours and proportions are the API's own annotated PNG's
// (handler/pose/draw.py).

export const COLORS = { left: "rgb(0, 200, 255)", right: "rgb(255, 80, 40)", center: "rgb(255, 220, 0)" };
const BOX = "#fff";
const LABEL = "rgb(20, 20, 20)";
const PICKED_LABEL = "#1f5fbf";

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
 * The people of a reply, the main person first. A reply from before the API found several people
 * has no `people`: its top-level joints are one person's (no score, no box).
 */
export function peopleOf(pose) {
  if (Array.isArray(pose.people)) return pose.people;
  return [{ score: null, box: null, joints: pose.joints, keypoints: pose.keypoints, region: pose.region ?? null }];
}

/** The person whose box holds the point (x, y) in photo pixels: the smallest such box; -1 when none does. */
export function personAt(people, x, y) {
  let found = -1;
  let area = Infinity;
  people.forEach((person, i) => {
    const b = person.box;
    if (!b || x < b.left || x > b.left + b.width || y < b.top || y > b.top + b.height) return;
    if (b.width * b.height < area) {
      found = i;
      area = b.width * b.height;
    }
  });
  return found;
}

/** Canvas pixels per photo pixel: the canvas shows the photo the API saw, maybe at another size. */
export function scaleOf(canvas, pose) {
  return [canvas.width / (pose.image?.width || canvas.width), canvas.height / (pose.image?.height || canvas.height)];
}

/**
 * Draw `photo` (a canvas of the uploaded image) on `canvas`, then each person's visible limbs and
 * joints (`visible[p][j]`), a thin box with the person's number (1 = the main person); when there
 * are several, the `picked` one's box is thicker and its number on blue. Boxes go under the skeletons
 * and numbers over them. Coordinates are in the photo's pixels as the API gives them: pixel
 * centres at integers.
 */
export function drawPeople(canvas, photo, pose, people, sides, visible, picked) {
  const { width, height } = photo;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0);
  if (!pose) return;
  const [kx, ky] = scaleOf(canvas, pose);
  const at = (joint) => [(joint.x + 0.5) * kx, (joint.y + 0.5) * ky];
  const size = Math.max(width, height);
  const lineWidth = Math.max(2, Math.round(size / 200));
  const radius = Math.max(3, Math.round(size / 120));
  const thin = Math.max(1, Math.floor(lineWidth / 2));
  const fontSize = Math.max(12, Math.round(size / 40)); // larger than the PNG's: read on a screen
  const pad = Math.max(2, thin);
  const highlighted = people.length > 1 ? picked : -1;
  // The boxed people, the highlighted one last so that it lies over the others.
  const boxed = people.map((person, p) => ({ p, box: person.box })).filter(({ box }) => box)
    .sort((a, b) => (a.p === highlighted) - (b.p === highlighted));

  ctx.strokeStyle = BOX;
  for (const { p, box } of boxed) {
    ctx.lineWidth = p === highlighted ? lineWidth * 2 : thin;
    ctx.strokeRect((box.left + 0.5) * kx, (box.top + 0.5) * ky, box.width * kx, box.height * ky);
  }

  people.forEach((person, p) => {
    const shown = visible[p];
    const joints = person.joints;
    ctx.lineCap = "round";
    ctx.lineWidth = lineWidth;
    for (const limb of pose.skeleton) {
      const [a, b] = limb.pair;
      if (!shown[a] || !shown[b]) continue;
      ctx.strokeStyle = COLORS[sides[a] === sides[b] ? sides[a] : "center"];
      ctx.beginPath();
      ctx.moveTo(...at(joints[a]));
      ctx.lineTo(...at(joints[b]));
      ctx.stroke();
    }
    ctx.lineWidth = thin;
    ctx.strokeStyle = "#fff";
    joints.forEach((joint, j) => {
      if (!shown[j]) return;
      ctx.fillStyle = COLORS[sides[j]];
      ctx.beginPath();
      ctx.arc(...at(joint), radius, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    });
  });

  ctx.textBaseline = "top";
  for (const { p, box } of boxed) {
    const [x, y] = [(box.left + 0.5) * kx, (box.top + 0.5) * ky];
    const text = String(p + 1);
    ctx.font = `${p === highlighted ? "bold " : ""}${fontSize}px system-ui, sans-serif`;
    ctx.fillStyle = p === highlighted ? PICKED_LABEL : LABEL;
    ctx.fillRect(x, y, ctx.measureText(text).width + 2 * pad, fontSize + 2 * pad);
    ctx.fillStyle = BOX;
    ctx.fillText(text, x + pad, y + pad);
  }
}
