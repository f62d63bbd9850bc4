"""The causal chat LM core of the tag task's Hugging Face engine, on a tiny random Llama chat model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vidcap.engines.hf_chat import ChatGenerator, load_chat_model, load_chat_tokenizer  # noqa: E402
from vidcap.errors import UserError  # noqa: E402
from vidcap.fixtures.tiny_text_model import make_tiny_text_model  # noqa: E402

#: a greedy step whose top-2 logits are closer than this may flip under a batch's tiny float differences
TIE = 1e-3
MESSAGES = [
    "A cat.",
    "A red car drives along a wet road at night under orange street lamps, and a woman in a blue coat walks "
    "her dog through a quiet park in autumn while two children ride bicycles down a dirt path.",
    "People dance at an outdoor concert.",
    "Two children ride bicycles down a dirt path between tall trees, and then they stop by a river.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_text_model(tmp_path_factory.mktemp("tiny_chat"))


@pytest.fixture(scope="module")
def generator(tiny):
    tokenizer = load_chat_tokenizer(str(tiny))
    return ChatGenerator(load_chat_model(str(tiny), device="cpu"), tokenizer, max_new_tokens=12)


def reference(generator: ChatGenerator, message: str) -> tuple[list[int], list[float]]:
    """One message alone (no padding at all): its greedy tokens and, per step, the top-1 / top-2 logit gap."""
    inputs = generator.tokenizer([generator.prompt_text(message)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = generator.model.generate(**inputs, generation_config=generator.generation, output_scores=True,
                                       return_dict_in_generate=True)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    gaps = [float(torch.topk(step[0], 2).values.diff().abs()) for step in out.scores]
    return tokens, gaps


def compared_prefix(tokens: list[int], gaps: list[float]) -> int:
    """How many leading tokens are decided by a clear margin (after a near-tie, either token is right)."""
    return next((i for i, gap in enumerate(gaps) if gap < TIE), len(tokens))


def test_tokenizer_is_made_left_padding_with_a_pad_token(generator):
    # the tiny tokenizer ships as Llama 3's does: no pad token, right padding
    assert generator.tokenizer.padding_side == "left"
    assert generator.tokenizer.pad_token is not None
    prompt = generator.prompt_text("A dog.")
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA dog.<|eot_id|>")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = generator.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(generator.tokenizer.bos_token_id) == 1


def test_batched_answers_equal_one_at_a_time(generator):
    batched = generator.generate(MESSAGES)
    assert len(batched) == len(MESSAGES)
    compared = 0
    for message, answer in zip(MESSAGES, batched):
        alone = generator.generate([message])[0]
        tokens, gaps = reference(generator, message)
        assert alone.token_ids == tokens[:len(alone.token_ids)]
        n = compared_prefix(tokens, gaps)
        assert answer.token_ids[:n] == tokens[:n], message
        if n == len(tokens):
            assert answer.text == alone.text
        compared += n
        assert answer.prompt_tokens == alone.prompt_tokens
    assert compared >= len(MESSAGES) * generator.max_new_tokens // 2, "too many near-ties to prove anything"


def test_right_padding_would_change_answers(tiny, generator):
    """The check above has teeth: padded on the right (Open-Sora's bug), short prompts answer differently."""
    right = load_chat_tokenizer(str(tiny))
    right.padding_side = "right"
    wrong = ChatGenerator(generator.model, right, max_new_tokens=12)
    batched = wrong.generate(MESSAGES)
    differ = [m for m, a in zip(MESSAGES, batched) if a.token_ids != generator.generate([m])[0].token_ids]
    assert differ, "right padding gave the same answers: the left-padding test would prove nothing"


def test_answers_are_reproducible_and_report_why_they_ended(generator):
    first = generator.generate(MESSAGES[:2])
    second = generator.generate(MESSAGES[:2])
    assert [a.token_ids for a in first] == [a.token_ids for a in second]
    for answer in first:
        assert answer.finish_reason in ("stop", "length")
        assert answer.generated_tokens == len(answer.token_ids) <= generator.max_new_tokens
        if answer.finish_reason == "length":
            assert answer.generated_tokens == generator.max_new_tokens


def test_overflowing_message_is_an_error_answer_and_the_others_run(tiny, generator):
    small = ChatGenerator(generator.model, generator.tokenizer, max_new_tokens=8)
    small.context = small.prompt_tokens(MESSAGES[0]) + 20
    answers = small.generate([MESSAGES[0], MESSAGES[1], MESSAGES[2]])
    assert not answers[0].error and not answers[2].error
    assert "exceeds the model's context" in answers[1].error
    with pytest.raises(UserError, match="too long"):
        small.check_fits(MESSAGES[1])


def test_model_without_chat_template_is_refused(tmp_path, tiny):
    import json
    import shutil

    copy = tmp_path / "base"
    shutil.copytree(tiny, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no chat template"):
        load_chat_tokenizer(str(copy))
    with pytest.raises(UserError, match="cannot load model"):
        load_chat_model(str(tmp_path / "missing"), device="cpu")


def test_text_engine_halves_a_batch_on_out_of_memory_and_keeps_order(tiny, generator):
    """The hf-text engine under the worker's OOM halving: generate fails on more than 2 prompts at once (as a
    GPU would); every sample still gets its own answer, in order, equal to the answer it gets alone."""
    from vidcap.engines.base import Sample
    from vidcap.engines.batching import run_batch
    from vidcap.engines.hf_text import HFTextEngine, HFTextSettings

    engine = HFTextEngine(HFTextSettings(model=str(tiny), max_new_tokens=12, device="cpu"))
    engine.open()
    real = engine.generator.model.generate
    sizes = []

    def limited(**kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(**kwargs)

    engine.generator.model.generate = limited
    batch = [Sample(key=f"k{i}", text=m, prompt=m) for i, m in enumerate(MESSAGES + MESSAGES[:1])]
    results = run_batch(engine, batch)
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    engine.generator.model.generate = real
    for sample, result in zip(batch, results):
        assert not result.error and result.finish_reason in ("stop", "length")
        alone = generator.generate([sample.prompt])[0]
        tokens, gaps = reference(generator, sample.prompt)
        if compared_prefix(tokens, gaps) == len(tokens):
            assert result.text == alone.text, sample.key
    engine.close()
    assert engine.generator is None


def test_make_tiny_model_builds_the_chat_family(tmp_path):
    from vidcap.cli import main

    assert main(["make-tiny-model", str(tmp_path / "chat"), "--family", "llama-chat"]) == 0
    tokenizer = load_chat_tokenizer(str(tmp_path / "chat"))
    assert "<|start_header_id|>assistant<|end_header_id|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert type(load_chat_model(str(tmp_path / "chat"), device="cpu")).__name__ == "LlamaForCausalLM"
