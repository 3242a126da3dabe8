// Drawing every person over the photo, deciding which joints are visible at a threshold, and
// finding the person under a click. The colours and proportions are the API's own annotated PNG's
// (handler/pose/draw.py).

export const COLORS = { left: "rgb(0, 200, 255)", right: "rgb(255, 80, 40)", center: "rgb(255, 220, 0)" };
export const BOX = "#fff"; // boxes, and the numbers' text
export const OUTLINE = "#fff"; // around each joint's dot
export const LABEL = "rgb(20, 20, 20)"; // under a person's number
export const PICKED_LABEL = "#1f5fbf"; // under the picked person's number

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
 * What drawPeople draws over the photo, in painting order, as plain data in canvas pixels: a
 * `box` per person who has one, then each person's visible `limb`s and `joint`s (`visible[p][j]`),
 * then a `label` with the person's number (1 = the main person) in the corner of each box; a tracked
 * person (POST /track's, with `track_id` and `color`) has their box and label in the track's colour and
 * the label says the track id, as the annotated video does. When
 * there are several people the `picked` one's box is thicker and drawn last, and its number is bold
 * on blue. `size` is the canvas's (the photo's) width and height. Coordinates are in the photo's
 * pixels as the API gives them: pixel centres at integers.
 */
export function drawingOf(size, pose, people, sides, visible, picked) {
  const [kx, ky] = scaleOf(size, pose);
  const at = (point) => [(point.x + 0.5) * kx, (point.y + 0.5) * ky];
  const longest = Math.max(size.width, size.height);
  const lineWidth = Math.max(2, Math.round(longest / 200));
  const radius = Math.max(3, Math.round(longest / 120));
  const thin = Math.max(1, Math.floor(lineWidth / 2));
  const fontSize = Math.max(12, Math.round(longest / 40)); // larger than the PNG's: read on a screen
  const pad = Math.max(2, thin);
  const highlighted = people.length > 1 ? picked : -1;
  // The boxed people, the highlighted one last so that it lies over the others.
  const boxed = people.map((person, p) => ({ p, box: person.box, ink: person.color ?? BOX })).filter(({ box }) => box)
    .sort((a, b) => (a.p === highlighted) - (b.p === highlighted));

  const corner = (box) => ({ x: (box.left + 0.5) * kx, y: (box.top + 0.5) * ky });
  const boxes = boxed.map(({ p, box, ink }) => ({
    kind: "box", person: p, ...corner(box), width: box.width * kx, height: box.height * ky,
    color: ink, lineWidth: p === highlighted ? lineWidth * 2 : thin,
  }));
  const skeletons = people.flatMap((person, p) => {
    const shown = visible[p];
    const limbs = pose.skeleton.filter(({ pair: [a, b] }) => shown[a] && shown[b]).map(({ pair: [a, b] }) => ({
      kind: "limb", person: p, joints: [a, b], from: at(person.joints[a]), to: at(person.joints[b]),
      color: COLORS[sides[a] === sides[b] ? sides[a] : "center"], lineWidth,
    }));
    const dots = person.joints.flatMap((joint, j) => (shown[j] ? [{
      kind: "joint", person: p, joint: j, center: at(joint), radius,
      color: COLORS[sides[j]], outline: OUTLINE, lineWidth: thin,
    }] : []));
    return [...limbs, ...dots];
  });
  const labels = boxed.map(({ p, box, ink }) => ({
    kind: "label", person: p, text: String(people[p].track_id ?? p + 1), ...corner(box), pad, fontSize,
    font: `${p === highlighted ? "bold " : ""}${fontSize}px system-ui, sans-serif`,
    background: p === highlighted ? PICKED_LABEL : LABEL, color: ink,
  }));
  return [...boxes, ...skeletons, ...labels];
}

/** How each kind of drawingOf's marks is painted on a 2D context. */
const PAINT = {
  box(ctx, { x, y, width, height, color, lineWidth }) {
    ctx.strokeStyle = color;
    ctx.lineWidth = lineWidth;
    ctx.strokeRect(x, y, width, height);
  },
  limb(ctx, { from, to, color, lineWidth }) {
    ctx.lineCap = "round";
    ctx.lineWidth = lineWidth;
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  },
  joint(ctx, { center, radius, color, outline, lineWidth }) {
    ctx.lineWidth = lineWidth;
    ctx.strokeStyle = outline;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(...center, radius, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  },
  label(ctx, { text, x, y, pad, fontSize, font, background, color }) {
    ctx.textBaseline = "top";
    ctx.font = font;
    ctx.fillStyle = background;
    ctx.fillRect(x, y, ctx.measureText(text).width + 2 * pad, fontSize + 2 * pad);
    ctx.fillStyle = color;
    ctx.fillText(text, x + pad, y + pad);
  },
};

/** Paint drawingOf's marks on a 2D context (over whatever it shows). */
export function paintMarks(ctx, marks) {
  for (const mark of marks) PAINT[mark.kind](ctx, mark);
}

/**
 * Draw `photo` (a canvas of the uploaded image) on `canvas`, then, when there is a reply, every
 * person as drawingOf lays them out. Returns the marks drawn over the photo (none without a reply):
 * what the canvas shows, as data.
 */
export function drawPeople(canvas, photo, pose, people, sides, visible, picked) {
  const { width, height } = photo;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0);
  if (!pose) return [];
  const drawing = drawingOf(photo, pose, people, sides, visible, picked);
  paintMarks(ctx, drawing);
  return drawing;
}
