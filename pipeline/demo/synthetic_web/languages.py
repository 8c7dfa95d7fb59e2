"""The synthetic web in several languages and scripts (German, Chinese, Japanese, Thai, Arabic), for
the worldwide demo (MetaCLIP 2): each language's words for the web's colours and shapes, alt-text
templates as that language's web writes them, and small Wikipedia articles built from the same
words, so each language's query list (built by `clipdata queries build --lang`) holds them.

The words are plain dictionary translations; German adjectives are left uninflected in templates
that allow it ("Kreis in Rot"). Japanese keeps its katakana words (オレンジ, ハート): under MetaCLIP
2's matching rule a list entry ending in kana is padded with spaces, so those match only where a
space or punctuation follows them, which the demo's numbers show as they are.
"""
from __future__ import annotations

import random

LANGUAGES = ("de", "zh", "ja", "th", "ar")

COLOURS = {
    "de": {"red": "Rot", "orange": "Orange", "yellow": "Gelb", "green": "Grün", "blue": "Blau",
           "purple": "Lila", "pink": "Rosa", "black": "Schwarz"},
    "zh": {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
           "purple": "紫色", "pink": "粉色", "black": "黑色"},
    "ja": {"red": "赤", "orange": "オレンジ", "yellow": "黄色", "green": "緑", "blue": "青",
           "purple": "紫", "pink": "ピンク", "black": "黒"},
    "th": {"red": "สีแดง", "orange": "สีส้ม", "yellow": "สีเหลือง", "green": "สีเขียว", "blue": "สีน้ำเงิน",
           "purple": "สีม่วง", "pink": "สีชมพู", "black": "สีดำ"},
    "ar": {"red": "أحمر", "orange": "برتقالي", "yellow": "أصفر", "green": "أخضر", "blue": "أزرق",
           "purple": "بنفسجي", "pink": "وردي", "black": "أسود"},
}
SHAPES = {
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern", "cross": "Kreuz",
           "heart": "Herz", "ring": "Ring", "diamond": "Raute", "hexagon": "Sechseck", "arrow": "Pfeil"},
    "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字",
           "heart": "心形", "ring": "圆环", "diamond": "菱形", "hexagon": "六边形", "arrow": "箭头"},
    "ja": {"circle": "円", "square": "四角形", "triangle": "三角形", "star": "星", "cross": "十字",
           "heart": "ハート", "ring": "輪", "diamond": "菱形", "hexagon": "六角形", "arrow": "矢印"},
    "th": {"circle": "วงกลม", "square": "สี่เหลี่ยม", "triangle": "สามเหลี่ยม", "star": "ดาว", "cross": "กากบาท",
           "heart": "หัวใจ", "ring": "แหวน", "diamond": "เพชร", "hexagon": "หกเหลี่ยม", "arrow": "ลูกศร"},
    "ar": {"circle": "دائرة", "square": "مربع", "triangle": "مثلث", "star": "نجمة", "cross": "صليب",
           "heart": "قلب", "ring": "حلقة", "diamond": "معين", "hexagon": "سداسي", "arrow": "سهم"},
}
CAPTION_TEMPLATES = {
    "de": ("{shape} in {colour} auf weißem Hintergrund", "Clipart: {shape} in der Farbe {colour}",
           "Symbol {shape}, Farbe {colour}, kostenlos herunterladen", "einfaches {shape} Symbol in {colour}"),
    "zh": ("{colour}的{shape}", "{colour}{shape}图标免费下载", "一个{colour}的{shape}剪贴画", "简单的{colour}{shape}图案"),
    "ja": ("{colour}の{shape}のイラスト", "{colour}の{shape}のアイコンです", "シンプルな{colour}の{shape}素材"),
    "th": ("ภาพ{shape}{colour}", "ไอคอน{shape}{colour}ดาวน์โหลดฟรี", "รูป{shape}{colour}บนพื้นหลังสีขาว"),
    "ar": ("صورة {shape} {colour}", "رسم {shape} {colour} للتحميل المجاني", "أيقونة {shape} باللون {colour}"),
}
# Everyday words of each language for the articles between the colour and shape words.
FILLERS = {
    "de": "der die das und ist ein eine mit auf im von zu für Bild Form Farbe sehr oft hier Kunst".split(),
    "zh": list("的是在有和这个那一我们图案颜色形状非常经常"),
    "ja": "の は が に を と です ます この その 図形 色 形 とても よく".split(),
    "th": "และ เป็น ที่ ของ ใน มี ภาพ รูป สี ทรง มาก บ่อย".split(),
    "ar": "في من على هذا هذه هو هي مع إلى صورة شكل لون جدا غالبا".split(),
}
# Wikipedia's names of the namespaces whose links are not prose, per language (as in the dumps).
NAMESPACES = {
    "de": [(-2, "Medium"), (0, ""), (1, "Diskussion"), (6, "Datei"), (14, "Kategorie")],
    "zh": [(-2, "Media"), (0, ""), (1, "Talk"), (6, "File"), (14, "Category")],
    "ja": [(-2, "メディア"), (0, ""), (1, "ノート"), (6, "ファイル"), (14, "Category")],
    "th": [(-2, "สื่อ"), (0, ""), (1, "พูดคุย"), (6, "ไฟล์"), (14, "หมวดหมู่")],
    "ar": [(-2, "ميديا"), (0, ""), (1, "نقاش"), (6, "ملف"), (14, "تصنيف")],
}
SPACED = {"de", "ar"}   # languages whose words are separated by spaces (the others: none, as written)


def caption(shape: str, colour: str, language: str, rng: random.Random) -> str:
    """An alt text for a (shape, colour) image in `language`."""
    return rng.choice(CAPTION_TEMPLATES[language]).format(shape=SHAPES[language][shape],
                                                          colour=COLOURS[language][colour])


# Letters rare words are made of, per script: the long tail a real Wikipedia has (MetaCLIP 2 keeps
# the top 10% of a language's distinct words, so a list needs a tail for its head to be listed).
RARE_LETTERS = {
    "de": "abcdefghiklmnoprstuwzäöü", "ar": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "zh": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000, 3)),
    "ja": "".join(chr(c) for c in range(0x5000, 0x5000 + 3000, 3)),
    "th": "".join(chr(c) for c in range(0x0E01, 0x0E2F)),
}


def rare_words(language: str, rng: random.Random, n: int = 1500) -> list[str]:
    letters = RARE_LETTERS[language]
    if language in SPACED:
        return ["".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(n)]
    return ["".join(rng.choice(letters) for _ in range(rng.randint(1, 2))) for _ in range(n)]


def article_pages(language: str, n_pages: int, seed: int, first_id: int = 1) -> list[dict]:
    """Small Wikipedia articles in `language`: sentences of colour and shape words among fillers
    and rare words, a category and a file link in the wiki's own namespace names, a talk page and
    a redirect."""
    rng = random.Random(f"articles:{language}:{seed}")
    rare = rare_words(language, rng)
    words = list(COLOURS[language].values()) + list(SHAPES[language].values())
    category, file_ns = dict(NAMESPACES[language])[14], dict(NAMESPACES[language])[6]
    sep = " " if language in SPACED else ""
    pages = []
    for k in range(n_pages):
        sentences = []
        for _ in range(rng.randint(4, 8)):
            tokens = [rng.choice(words) if (u := rng.random()) < 0.35 else rng.choice(FILLERS[language])
                      if u < 0.7 else rng.choice(rare) for _ in range(rng.randint(5, 10))]
            sentences.append(sep.join(tokens) + ("." if language in SPACED else "。" if language in ("zh", "ja") else " "))
        title = f"{rng.choice(words)} {k}"
        text = (" ".join(sentences) + f"\n[[{file_ns}:{k}.png|thumb|{rng.choice(FILLERS[language])}]]"
                + f"\n[[{category}:{rng.choice(FILLERS[language])}]]")
        pages.append(dict(title=title, ns=0, page_id=first_id + k, redirect=False, text=text))
    pages.append(dict(title=f"{dict(NAMESPACES[language])[1]}:{words[0]}", ns=1, page_id=first_id + n_pages,
                      redirect=False, text=" ".join([words[0]] * 50)))
    pages.append(dict(title=f"{words[1]} redirect", ns=0, page_id=first_id + n_pages + 1, redirect=True,
                      text=f"#REDIRECT [[{words[1]} 0]]"))
    return pages
