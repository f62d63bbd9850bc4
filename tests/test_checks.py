"""Caption checks on crafted captions: each flag fires on the broken kind, and the near-misses (a legitimately
repetitive sentence, a video caption that mentions an image inside the scene, a keyword list, a Chinese
caption, ...) stay clean. The tiny random models' babble is flagged for real at the end."""

from __future__ import annotations

import random

import pytest

from vidcap.checks import CaptionChecker, CheckContext, CheckSettings, FLAGS, check_caption, parse_checks
from vidcap.checks import language
from vidcap.checks.rules import Text, repeated_share
from vidcap.errors import UserError
from vidcap.prompts import PRESETS

VIDEO = CheckContext(is_video=True)
IMAGE = CheckContext(is_video=False)

#: good captions of videos, many of them near-misses of some check; none may raise any flag
GOOD_VIDEO = [
    "A golden retriever runs along a sandy beach at sunset while small waves roll in behind it. The camera "
    "tracks beside the dog at a low angle.",
    "The video opens on a busy city intersection at night. Cars stream past in both directions, their "
    "headlights leaving long streaks of light, while pedestrians wait at the crossing. The camera is fixed on "
    "a tripod above the street, and the scene is shot as a time-lapse with cool blue tones and bright neon "
    "signs in the background.",
    # legitimately repetitive
    "A drummer hits the snare again and again and again while the crowd claps along to the beat under "
    "flashing stage lights.",
    "Waves crash, crash, crash against the rocks as the tide comes in, filmed from a drone circling high "
    "above the cliffs at dawn.",
    "In the first shot a man stands by the door. In the second shot a man sits at the table. In the third "
    "shot a man walks to the window and looks out at the rain.",
    "A metronome ticks back and forth on top of a piano while a pianist plays the same chord over and over, "
    "slowly, softly, then louder.",
    # a video that mentions an image or a picture inside the scene
    "A man holds up a framed picture of his family and smiles at the camera, then sets it down on the "
    "mantelpiece beside a vase of flowers.",
    "A woman walks into an art gallery and stops in front of a large painting; the picture on the wall "
    "shows a stormy sea, and she leans closer to look at it.",
    "Tourists photograph the image of the Virgin projected on the cathedral wall as the camera slowly pans "
    "from left to right across the square.",
    "A kid watches a cartoon on a TV; on the screen the image flickers between a cat and a mouse chasing "
    "each other around a kitchen.",
    "The clip shows a potter shaping clay on a spinning wheel; her wet hands pull the walls of the bowl "
    "upward while the camera circles her studio.",
    # terse styles, few function words
    "Close-up of hands kneading bread dough on a wooden table, soft window light, slow motion.",
    "Aerial drone footage: turquoise lagoon surrounded by white sand beaches and palm trees.",
    "Red sports car drifting around a mountain hairpin turn during golden hour, smoke pouring from its tyres.",
    "beach, sunset, waves, palm trees, golden hour, surfers, ocean, sky, drone shot",
    # other languages and scripts
    "Un chat noir dort sur le rebord de la fenêtre pendant que la pluie coule sur la vitre.",
    "Ein Hund läuft am Strand entlang und jagt die Möwen, während die Kamera ihm langsam folgt.",
    "Un perro corre por la playa al atardecer mientras las olas rompen detrás de él.",
    "一只黑猫在窗台上睡觉，雨水顺着玻璃流下，镜头缓慢推进。",
    "Кошка спит на подоконнике, а по стеклу стекает дождь; камера медленно приближается.",
    # names, numbers, acronyms, odd but real words
    "A YouTuber unboxes a new iPhone 15 Pro in 4K, turning the box over in his hands on a desk lit by a "
    "ring light.",
    "A DJ plays a set at an outdoor festival in the UK as thousands of fans dance; lasers sweep over the "
    "crowd in a 1990s-style rave near NYC.",
    "Mr. Smith, the teacher, writes E=mc2 on the blackboard while students take notes; the camera zooms in "
    "on the equation.",
    "McDonald's staff serve burgers at 10:30 a.m. while a 3D-printed sign (about 50% off!) hangs over the "
    "counter, e.g. for the new menu.",
    "**A woman** in a red coat crosses a rainy street — she doesn't look back — and disappears into a café.",
]
GOOD_IMAGE = [
    "A bowl of fruit sits on a white table in a bright room, lit by soft window light.",
    "A poster for a film hangs on a brick wall; the video store behind it has its lights off.",
    "A man watches a video on his phone while waiting for the bus in the rain.",
]


@pytest.mark.parametrize("caption", GOOD_VIDEO)
def test_good_video_captions_raise_no_flag(caption):
    context = CheckContext(is_video=True, prompt=PRESETS["video"].text, finish_reason="stop",
                           generated_tokens=60, max_new_tokens=256)
    assert check_caption(caption, context) == []


@pytest.mark.parametrize("caption", GOOD_IMAGE)
def test_good_image_captions_raise_no_flag(caption):
    assert check_caption(caption, CheckContext(is_video=False, prompt=PRESETS["image"].text)) == []


@pytest.mark.parametrize("caption", [None, "", "   ", "\n\t \n"])
def test_empty(caption):
    assert check_caption(caption, VIDEO) == ["empty"]
    # empty is not also too_short or not_language, but a cut-off can still be said
    assert check_caption(caption, CheckContext(generated_tokens=64, max_new_tokens=64)) == ["empty", "truncated"]


@pytest.mark.parametrize("caption", [
    "the the the the the the the the the the the the",
    "A man walks on the street. He is wearing a hat. He is wearing a hat. He is wearing a hat. He is "
    "wearing a hat. He is wearing a hat. He is wearing a hat.",
    "window window window window window window window window window window window window window window",
    "The dog runs on the grass and the dog runs on the grass and the dog runs on the grass.",
    "A red car drives on a road.A red car drives on a road.A red car drives on a road.",
    # a loop without spaces, hidden in one long "word"
    "A cat sits by the window hahahahahahahahahahahahahahahahahahahahahahahahahahahahahahahahahahaha",
])
def test_loop(caption):
    assert "loop" in check_caption(caption, VIDEO)


@pytest.mark.parametrize("caption", [
    "A drummer hits the snare again and again and again and again while the crowd claps.",
    "Knock, knock, knock: a man raps on the door three times, waits, then knocks once more.",
    "The camera pans left. The camera pans right. Then it tilts up to show a sky full of clouds and birds "
    "circling over the hills.",
    "Rain falls on a quiet street at night. Puddles reflect the neon signs. A lone cyclist passes under a "
    "streetlamp. The shot is static and the mood is melancholic, in the style of a film noir.",
    "Visit https://example.com/a-very-long-path-name-for-a-video-page to see a man painting a fence white.",
])
def test_loop_near_misses(caption):
    assert "loop" not in check_caption(caption, VIDEO)


def test_loop_coverage_is_a_share_of_positions():
    words = "a b c a b c a b c".split()
    assert repeated_share(words, 3, 2) == 1.0
    assert repeated_share("x y z w v u".split(), 3, 2) == 0.0
    assert repeated_share("abab", 2, 2) == pytest.approx(2 / 3)
    # the cheap bound in front of the exact count never cuts a caption the exact count would flag
    rng = random.Random(3)
    s = CheckSettings()
    for _ in range(3000):
        words = [rng.choice("abcde") for _ in range(rng.randint(1, 20))]
        from vidcap.checks.rules import _max_repeated_share
        assert _max_repeated_share(words, s.loop_ngram, s.loop_repeats) >= repeated_share(
            words, s.loop_ngram, s.loop_repeats)


def test_truncated_only_from_the_engine_never_guessed():
    cut = "A woman in a blue coat walks her dog through a quiet park in"
    assert check_caption(cut, VIDEO) == []  # mid-sentence, but nothing says it hit the limit: no guess
    assert check_caption(cut, CheckContext(finish_reason="length")) == ["truncated"]
    assert check_caption(cut, CheckContext(finish_reason="stop", generated_tokens=12, max_new_tokens=12)) == [
        "truncated"]
    assert check_caption(cut, CheckContext(generated_tokens=12, max_new_tokens=12)) == ["truncated"]
    assert check_caption(cut, CheckContext(generated_tokens=11, max_new_tokens=12)) == []
    assert check_caption(cut, CheckContext(generated_tokens=300)) == []  # no limit known
    assert check_caption(cut, CheckContext(finish_reason="stop")) == []


PLLAVA_SYSTEM = ("You are Pllava, a large vision-language assistant. You are able to understand the video "
                 "content that the user provides, and assist the user with a variety of tasks using natural "
                 "language. Follow the instructions carefully and explain your answers in detail based on "
                 "the provided video.")


def test_prompt_echo():
    video = PRESETS["video"].text
    echo = ("Describe the video in a few sentences: who or what is in it and what happens, the setting, how "
            "the camera moves.")
    assert check_caption(echo, CheckContext(prompt=video)) == ["prompt_echo"]
    system_echo = ("You are able to understand the video content that the user provides, and assist the user "
                   "with a variety of tasks.")
    assert "prompt_echo" in check_caption(system_echo, CheckContext(prompt=video, system=PLLAVA_SYSTEM))
    # a few-shot example copied from the prompt is an echo too
    example = PRESETS["video-3ex"].text.split("Example 1: ")[1].split("\n")[0]
    assert "prompt_echo" in check_caption(example, CheckContext(prompt=PRESETS["video-3ex"].text))
    # punctuation and case do not hide an echo
    shouted = "DESCRIBE THE VIDEO, IN A FEW SENTENCES -- WHO OR WHAT IS IN IT; AND WHAT HAPPENS"
    assert "prompt_echo" in check_caption(shouted, CheckContext(prompt=video))
    # a short prompt (4+ words) repeated whole is an echo
    assert "prompt_echo" in check_caption("Describe this video briefly. A dog runs.",
                                          CheckContext(prompt="Describe this video briefly."))


def test_prompt_echo_near_misses():
    video = PRESETS["video"].text
    # shares words and short phrases with the prompt ("the camera", "the setting", "the visual style")
    caption = ("The video shows a man in a red jacket fixing a bicycle in a garage. The camera moves slowly "
               "around him, and the setting is lit by a single lamp; the visual style is warm and grainy.")
    assert check_caption(caption, CheckContext(prompt=video, system=PLLAVA_SYSTEM, is_video=True)) == []
    # no prompt known: the check says nothing
    assert check_caption(PLLAVA_SYSTEM, CheckContext()) == []
    # a prompt under 4 words cannot be told from ordinary words
    assert check_caption("Describe this: a dog runs on a beach.", CheckContext(prompt="Describe this:")) == []


@pytest.mark.parametrize("caption", [
    "The image shows a dog running along a beach at sunset.",
    "In this picture, a woman is reading a book on a park bench.",
    "A chef chops onions. The photo captures the steam rising from a pan.",
    "This photograph was taken at night: a city skyline glows behind a river.",
    "The still image depicts a mountain road with a truck passing by.",
])
def test_wrong_medium_on_video(caption):
    assert check_caption(caption, VIDEO) == ["wrong_medium"]
    assert check_caption(caption, IMAGE) == []  # right for an image
    assert check_caption(caption, CheckContext()) == []  # medium unknown: not judged


@pytest.mark.parametrize("caption", [
    "The video shows a bowl of fruit on a white table in a bright room.",
    "In this clip, a cat sleeps on a windowsill next to a potted plant.",
    "The footage captures a quiet harbour with boats moored in rows.",
    "The frames show a snowy mountain road with a truck parked at the side.",
])
def test_wrong_medium_on_image(caption):
    assert check_caption(caption, IMAGE) == ["wrong_medium"]
    assert check_caption(caption, VIDEO) == []


@pytest.mark.parametrize("caption, words", [("A cat.", 2), ("Dog running", 2), ("one two three four", 4),
                                            ("狗在跑", 3), ("Close-up, a dog.", 4)])
def test_too_short(caption, words):
    assert Text(caption).word_count == words
    assert check_caption(caption, VIDEO) == ["too_short"]
    assert check_caption(caption, VIDEO, CheckSettings(min_words=words)) == []


def test_too_short_near_misses():
    assert check_caption("A cat sleeps on a windowsill.", VIDEO) == []
    assert check_caption("一只黑猫在窗台上睡觉。", VIDEO) == []  # CJK: one word per character


@pytest.mark.parametrize("caption", [
    # random-weight babble: symbols and case flips inside words, letters around digits
    "ningPeople blueepdeBpsicing sleepsa callass dog<gh oTwving slowlyyleut",
    "w wooden tall quiet cine? thr#thbnead whiteer chefnowghg} and fxTime outdoor",
    "gerowc concert. breakman skyWmall@athatural5 autving theousesmall@athatural5 redreenzredreen",
    # word pieces glued together: plausible shapes, no function words
    "beac natural mist mountitche dep park windowsilssietverche clouyclesio street camicing imoat dir thrder",
    # a broken tokenizer: byte-level markers, byte-fallback pieces, replacement characters, mojibake
    "ĠA Ġdog Ġruns Ġon Ġthe Ġbeach Ġat Ġsunset",
    "<0x41> <0x20> <0x64> <0x6F> <0x67> <0x0A> runs",
    "A \ufffd\ufffd dog \ufffd\ufffd\ufffd on \ufffd\ufffd beach",
    "Un cafÃ© prÃ¨s de la fenÃªtre oÃ¹ il pleut",
    "<|im_start|> <|im_end|> <|endoftext|> <unk> <pad>",
])
def test_not_language(caption):
    assert "not_language" in check_caption(caption, VIDEO)


def test_not_language_near_misses_in_isolation():
    for token in ("iPhone", "McDonald's", "4K", "1990s", "3D-printed", "e.g.", "AT&T", "w/", "don't", "NYC",
                  "E=mc2", "Straßenbahn", "naïve", "Ελλάδα", "東京", "50%", "10:30", "(slow"):
        assert not language.is_nonword(token) or token == "E=mc2", token
    for token in ("crowd}able", "ningPeople", "Og7yead", "Ġthe", "<0x0A>", "cafÃ©", "catкот", "a" * 30):
        assert language.is_nonword(token), token


def test_ascii_screen_agrees_with_the_token_expression():
    """The shape screen in front of the regular expression may send clean text to it, never hide a non-word."""
    rng = random.Random(0)
    alphabet = "aZk9é É.,;:-'(){}#@<>_\n\t\x01!?%*&/+\"`~=|^[]\\$’‘“”«»…–—×©Ã\x85\xa0Ġ\ufffdк東"
    for _ in range(40000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        assert language.count_nonwords(text) == len(language._BAD_TOKEN.findall(text)), repr(text)
    for upper in range(27):  # runs of 26 letters, upper case then lower case
        text = f"a {'É' * upper}{'é' * (26 - upper)} b"
        assert language.count_nonwords(text) == 1, text
        assert language.count_nonwords(text[:-3] + " b") == 0, text


def test_settings_pick_checks_and_refuse_nonsense():
    assert parse_checks("all") == FLAGS
    assert parse_checks("none") == ()
    assert parse_checks("too_short, loop") == ("loop", "too_short")  # report order
    with pytest.raises(UserError, match="--checks: unknown flag.*lop"):
        parse_checks("lop")
    with pytest.raises(UserError, match="--check-min-words must be at least 1"):
        CheckSettings(min_words=0)
    with pytest.raises(UserError, match="--check-loop-coverage must be a share"):
        CheckSettings(loop_coverage=1.5)
    only = CaptionChecker(CheckSettings(checks=("too_short",)))
    assert only.flags("the the the the the the the the the", VIDEO) == []
    assert only.flags("A cat.", VIDEO) == ["too_short"]
    settings = CheckSettings(checks=("loop",), min_words=3)
    assert CheckSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(UserError, match="unknown setting"):
        CheckSettings.from_dict({"min_word": 3})


def test_flags_come_in_report_order_and_combine():
    caption = "The image shows the the the the the the the the the the the the the"
    flags = check_caption(caption, CheckContext(is_video=True, finish_reason="length"))
    assert flags == ["loop", "truncated", "wrong_medium"]


@pytest.mark.timeout(600)
def test_tiny_random_models_babble_is_flagged(tmp_path):
    """Real captions of a tiny random-weight model: every one is flagged (they loop, babble and run to the
    limit), and most for what they say, not only for the cut-off."""
    import numpy as np
    import torch

    from vidcap.engines.base import Sample
    from vidcap.engines.hf import HFEngine
    from vidcap.engines.hf_settings import HFSettings
    from vidcap.fixtures.tiny_models import make_tiny_model

    torch.set_num_threads(1)
    max_new = 48
    engine = HFEngine.loaded(HFSettings(model=str(make_tiny_model(tmp_path / "m", "llava")), max_new_tokens=max_new))
    rng = np.random.default_rng(0)
    prompt = PRESETS["video"].text
    samples = [Sample(str(i), [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)], prompt)
               for i in range(8)]
    captions = engine.run(samples)
    engine.close()
    checker = CaptionChecker()
    content = 0
    for caption in captions:
        assert caption.ok, caption.error
        flags = checker.flags(caption.text, CheckContext(prompt=prompt, is_video=True,
                                                         generated_tokens=caption.generated_tokens,
                                                         max_new_tokens=max_new))
        assert flags, caption.text
        content += bool({"loop", "not_language"} & set(flags))
    assert content >= 6, [c.text for c in captions]
