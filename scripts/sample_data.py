"""Writes the sample dataset shipped in the package: python/vlm_collate/data/.

Twelve conversations (multi-turn, one text-only, one with two images, one
image inlined as base64) about small images drawn here with Pillow, so every
reply describes its image truthfully. Run it from the repository root:

    python scripts/sample_data.py

The output is committed; rerunning it rewrites the same files.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image, ImageDraw

DATA = Path(__file__).resolve().parent.parent / "python" / "vlm_collate" / "data"
WHITE = (255, 255, 255)


def red_circle() -> Image.Image:
    image = Image.new("RGB", (112, 112), WHITE)
    ImageDraw.Draw(image).ellipse((24, 24, 88, 88), fill=(220, 30, 30))
    return image


def blue_squares() -> Image.Image:
    image = Image.new("RGB", (168, 84), WHITE)
    draw = ImageDraw.Draw(image)
    for k in range(3):
        x = 12 + 54 * k
        draw.rectangle((x, 24, x + 36, 60), fill=(30, 60, 200))
    return image


def bar_chart() -> Image.Image:
    image = Image.new("RGB", (140, 112), WHITE)
    draw = ImageDraw.Draw(image)
    colours = [(200, 60, 60), (60, 60, 200), (40, 160, 60), (230, 170, 30)]
    for k, (height, colour) in enumerate(zip((40, 60, 90, 30), colours, strict=True)):
        x = 14 + 30 * k
        draw.rectangle((x, 100 - height, x + 20, 100), fill=colour)
    draw.line((8, 100, 132, 100), fill=(0, 0, 0), width=2)
    return image


def arrow(pointing: str) -> Image.Image:
    image = Image.new("RGB", (112, 56), WHITE)
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 24, 82, 32), fill=(0, 0, 0))
    tip = [(12, 28), (34, 12), (34, 44)] if pointing == "left" else [(100, 28), (78, 12), (78, 44)]
    draw.polygon(tip, fill=(0, 0, 0))
    return image


def stripes() -> Image.Image:
    image = Image.new("RGB", (112, 112), WHITE)
    draw = ImageDraw.Draw(image)
    band = 112 / 10
    for k in range(10):
        colour = (240, 200, 0) if k % 2 == 0 else (0, 0, 0)
        draw.rectangle((0, round(k * band), 111, round((k + 1) * band) - 1), fill=colour)
    return image


def checkerboard() -> Image.Image:
    image = Image.new("RGB", (112, 112), WHITE)
    draw = ImageDraw.Draw(image)
    for row in range(4):
        for col in range(4):
            if (row + col) % 2 == 0:
                draw.rectangle((col * 28, row * 28, col * 28 + 27, row * 28 + 27), fill=(0, 0, 0))
    return image


def gradient() -> Image.Image:
    image = Image.new("RGB", (84, 112))
    draw = ImageDraw.Draw(image)
    top, bottom = (250, 140, 30), (110, 40, 150)
    for y in range(112):
        t = y / 111
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line((0, y, 83, y), fill=colour)
    return image


def smiley() -> Image.Image:
    image = Image.new("RGB", (112, 112), WHITE)
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 12, 100, 100), fill=(250, 220, 40), outline=(0, 0, 0), width=2)
    draw.ellipse((38, 38, 48, 48), fill=(0, 0, 0))
    draw.ellipse((64, 38, 74, 48), fill=(0, 0, 0))
    draw.arc((34, 44, 78, 84), start=20, end=160, fill=(0, 0, 0), width=3)
    return image


def green_triangle() -> Image.Image:
    image = Image.new("RGB", (56, 56), WHITE)
    ImageDraw.Draw(image).polygon([(28, 6), (50, 48), (6, 48)], fill=(30, 170, 60))
    return image


def traffic_light() -> Image.Image:
    image = Image.new("RGB", (56, 140), WHITE)
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 6, 46, 134), fill=(40, 40, 40))
    for k, colour in enumerate(((90, 20, 20), (90, 80, 10), (40, 230, 60))):
        y = 14 + 40 * k
        draw.ellipse((16, y, 40, y + 24), fill=colour)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def user(*items: str | dict) -> dict:
    content = [{"type": "text", "text": x} if isinstance(x, str) else x for x in items]
    return {"role": "user", "content": content}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def image(name: str) -> dict:
    return {"type": "image", "image": f"images/{name}.png"}


def conversations() -> list[list[dict]]:
    inline = "data:image/png;base64," + base64.b64encode(png_bytes(green_triangle())).decode()
    return [
        [
            user(image("red_circle"), "What shape is in this picture, and what colour is it?"),
            assistant("A red circle, centred on a white background."),
        ],
        [
            user(image("blue_squares"), "How many squares are there?"),
            assistant("Three."),
            user("What colour are they?"),
            assistant("All three are blue, in a row from left to right."),
        ],
        [
            {
                "role": "system",
                "content": "You are a concise assistant for machine learning questions.",
            },
            user("What does a collate function do in a PyTorch DataLoader?"),
            assistant(
                "It merges the list of samples the loader fetched into one batch: "
                "it pads sequences to a common length and stacks them into tensors."
            ),
            user("And why are prompt tokens labelled -100?"),
            assistant(
                "Because -100 is the index the cross-entropy loss ignores, so the model "
                "is trained only on the replies, not on the prompts."
            ),
        ],
        [
            user(image("bar_chart"), "Which bar is the tallest?"),
            assistant("The third bar from the left, the green one."),
        ],
        [
            user(
                image("arrow_left"), image("arrow_right"), "Do these two arrows point the same way?"
            ),
            assistant("No: the first arrow points left and the second points right."),
        ],
        [
            {"role": "system", "content": "Describe images precisely."},
            user(image("stripes"), "Describe the pattern."),
            assistant("Horizontal stripes alternating yellow and black, five of each."),
        ],
        [
            user(image("checkerboard"), "What is this?"),
            assistant("A four by four checkerboard of black and white squares."),
            user("What colour is the top-left square?"),
            assistant("Black."),
            user("And the bottom-right one?"),
            assistant("Also black: opposite corners share a colour on an even-sized board."),
        ],
        [
            user(image("gradient"), "Is this a photograph?"),
            assistant(
                "No. It is a smooth vertical gradient from orange at the top "
                "to purple at the bottom."
            ),
        ],
        [
            user(image("smiley"), "What is the face doing?"),
            assistant("Smiling: two dots for eyes and an upward-curving arc for a mouth."),
            user("Would you call it happy or sad?"),
            assistant("Happy."),
        ],
        [
            user({"type": "image", "image": inline}, "What shape is this, and what colour?"),
            assistant("A green triangle pointing up."),
        ],
        [
            user(image("traffic_light"), "Which light is on?"),
            assistant("The green one at the bottom; red and yellow are dark."),
            user("So may a car go?"),
            assistant("Yes, green means go."),
        ],
        [
            user(image("red_circle"), image("green_triangle"), "Compare the two shapes."),
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "The first is a red circle. "},
                    {"type": "text", "text": "The second is a smaller green triangle."},
                ],
            },
        ],
    ]


def main() -> None:
    images = {
        "red_circle": red_circle(),
        "blue_squares": blue_squares(),
        "bar_chart": bar_chart(),
        "arrow_left": arrow("left"),
        "arrow_right": arrow("right"),
        "stripes": stripes(),
        "checkerboard": checkerboard(),
        "gradient": gradient(),
        "smiley": smiley(),
        "traffic_light": traffic_light(),
        "green_triangle": green_triangle(),
    }
    (DATA / "images").mkdir(parents=True, exist_ok=True)
    for name, picture in images.items():
        (DATA / "images" / f"{name}.png").write_bytes(png_bytes(picture))
    lines = [json.dumps({"conversation": c}, ensure_ascii=False) for c in conversations()]
    (DATA / "sample.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} conversations and {len(images)} images to {DATA}")


if __name__ == "__main__":
    main()
