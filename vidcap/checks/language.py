"""Is a caption language at all? Shapes of words, not a dictionary.

Random-weight models and broken tokenizers produce two kinds of non-language that no dictionary download
is needed to see:
- tokens no writer produces: symbols inside a word (`crowd}able`, `room;ning`), case flipping inside a word
  (`ningPeople`), letters around digits (`Og7yead`), leftover tokenizer bytes (`Ġthe`, `<0x0A>`, U+FFFD,
  UTF-8 read as Latin-1 `cafÃ©`), Latin letters glued to another script, 26+ letters without a break;
- word pieces glued into plausible-looking strings (`aloween small with dough break`), which pass every
  shape test but almost never contain the short function words (the, of, and; le, und, de, ...) that make
  up a third of real prose in any European language.

Scripts other than Latin are never judged by shape (a Chinese caption has no spaces and no vowels); a token
that mixes Latin with another script is. A comma-separated list of keywords is a legitimate caption style
without function words, so the second rule leaves it alone.

This runs on every caption, so it works on the whole text at once: a caption in ASCII and Latin-1 is first mapped to
its shape (letters -> a/A, digits -> 0, ...) by one `str.translate`, and only a shape with something odd in
it is searched token by token with the regular expression.
"""

from __future__ import annotations

import re

#: common function words of English, French, German, Spanish, Italian, Portuguese and Dutch (lowercase)
FUNCTION_WORDS: frozenset[str] = frozenset("""
a an the of in on at to and or but nor with without from by for as is are was were be been being am it its
this that these those there here their his her he she they them we you i who whom which while into onto over
under through across along behind near between above below up down out off then than not no very some many
few all each both one two another other more most such only also just has have had can could will would may
might should do does did so if when where what how after before during against around about toward towards
le la les un une des du de et est dans sur avec pour par en au aux ce cette qui que il elle ils elles sont son
sa ses leur leurs ou mais pas plus
der die das den dem des ein eine einen einem einer und ist sind mit auf im von zu für bei aus nicht sich es
er wird vor über unter hinter neben zwischen durch
el los las una unos unas y con por para del al se su sus son está están sobre entre
lo gli uno è di della delle dei nel nella si
o os um uma é do da dos das em no na com
het een op van te voor aan zijn dat
""".split())

_LATIN = "A-Za-zÀ-ɏ"
# a stretch no human writer puts inside a token
_BAD = (
    r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # replacement character, control characters
    r"|[ĠĊ▁]|<0x[0-9A-Fa-f]{2}>|<\|?[a-z_]+\|?>"  # byte-level BPE / sentencepiece markers, special tokens
    r"|Ã[\x80-\xbf]|Â[\x80-\xbf]|â€"  # UTF-8 decoded as Latin-1
    rf"|[{_LATIN}][^\w\s'’\-–—.&/+]+[{_LATIN}]"  # a symbol between two Latin letters: crowd}}able, room;ning
    r"|[a-zà-ÿ]{2}[A-ZÀ-Þ][a-zà-ÿ]"  # case flip inside a word: ningPeople, glassTime (not iPhone, McDonald)
    r"|[^\W\d_]\d+[^\W\d_]"  # letters around digits: Og7yead, athatural5W (not 4K, 1990s)
    r"|[{}\[\]<>~=^|\\@`]"  # programming symbols
    rf"|[{_LATIN}][^\W\d_{_LATIN}]|[^\W\d_{_LATIN}][{_LATIN}]"  # Latin glued to another script
    r"|[^\W\d_]{26}"  # 26 letters without a break (loops without spaces look like this)
)
# a whole token holding such a stretch
_BAD_TOKEN = re.compile(rf"(?<!\S)\S*?(?:{_BAD})\S*")
_LATIN_LETTERS = re.compile(f"[{_LATIN}]")
_OTHER_LETTERS = re.compile(rf"[^\W\d_{_LATIN}]")


def _shape_table() -> dict[int, str]:
    """ASCII and Latin-1 letters, digits and punctuation -> the classes the screen looks at; anything else
    stays itself, so a shape that is not ASCII afterwards goes to the full expression."""
    table = {}
    for code in list(range(128)) + list(range(0xA0, 0x100)) + [ord(c) for c in "‘’“”…–—"]:
        c = chr(code)
        if c.isalpha() and (code < 128 or code >= 0xC0):
            table[code] = "a" if c.islower() else "A"
        elif c.isdigit() and code < 128:
            table[code] = "0"
        elif c in " \t\n\r":
            table[code] = " "
        elif c in ".-'&/+_’–—":
            table[code] = "."  # allowed inside a word: e.g., close-up, don't, AT&T, w/, back—and
        elif c in ",;:!?\"()%$#*‘“”…":
            table[code] = ","  # punctuation: fine after or before a word, odd between two letters
        else:
            table[code] = "#"  # control characters, {}[]<>~=^|\@`, every Latin-1 symbol
            # (after Ã or Â it is UTF-8 read as Latin-1)
    return table


_SHAPE = str.maketrans(_shape_table())


def _suspect(shape: str) -> bool:
    """In an ASCII caption's shape, the only ways a token can hold a _BAD stretch (an `or` chain of
    substring searches: each one a C loop)."""
    return ("#" in shape or "aA" in shape or "a0" in shape or "A0" in shape or "a,a" in shape
            or "a,A" in shape or "A,a" in shape or "A,A" in shape or "a,," in shape or "A,," in shape
            # 26 letters in a row with no case flip are A..Aa..a: 25 lower, 13 upper, or AA and 13 lower
            or "aaaaaaaaaaaaaaaaaaaaaaaaa" in shape or "AAAAAAAAAAAAA" in shape
            or ("AA" in shape and "aaaaaaaaaaaaa" in shape))


def is_nonword(token: str) -> bool:
    """Whether one whitespace-separated token is a non-word (the rule `language_figures` counts)."""
    return _BAD_TOKEN.fullmatch(token) is not None


def count_nonwords(text: str) -> int:
    """Tokens of `text` that are non-words."""
    shape = text.translate(_SHAPE)
    if shape.isascii() and not _suspect(shape):
        return 0
    return len(_BAD_TOKEN.findall(text))


def count_function_words(words: list[str]) -> int:
    """How many of the lower-case `words` are common function words."""
    return len(list(filter(FUNCTION_WORDS.__contains__, words)))


def looks_latin(text: str) -> bool:
    """Most letters of the text are Latin: the function-word rule applies only then."""
    if text.isascii():
        return True
    latin = len(_LATIN_LETTERS.findall(text))
    return latin > 0 and latin >= 2 * len(_OTHER_LETTERS.findall(text))
