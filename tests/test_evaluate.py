"""eval/evaluate.py on a tiny random Llama and a byte-level BPE trained here: loss, perplexity and
bits per byte against an independent computation through the model's own loss; lm-evaluation-harness
on a checkpoint saved by a real growing Trainer run."""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from eval.evaluate import LM_EVAL_TASKS, build_stream, evaluate, iter_documents, main, run_lm_eval, score_stream

REPO = Path(__file__).resolve().parent.parent
EOS = "<|endoftext|>"
WORDS = "the quick brown fox jumps over a lazy dog; naïve café über größe 日本語 — stack grow layer model token 42".split()


def make_docs(n=10, seed=0):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(rng.randint(1, 4))]
        docs.append("\n".join(lines))  # single newlines stay inside a document
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    docs = make_docs()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_docs(60, seed=1), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    fast.save_pretrained(ckpt)
    txt = root / "val.txt"
    # Blank lines separate the documents (three newlines count as one separator, as in training).
    txt.write_text("\n\n".join(docs[:5]) + "\n\n\n" + "\n\n".join(docs[5:]) + "\n", encoding="utf-8")
    return {"root": root, "docs": docs, "ckpt": ckpt, "txt": txt, "model": model.eval(), "tok": fast}


def manual_nll(model, tok, docs, block_size):
    """Sum of NLL over "eos d1 eos ... dn eos" in windows of block_size + 1, via HF's own loss."""
    eos = tok.eos_token_id
    stream = [eos]
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [eos]
    total, n = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for s in range(0, len(stream) - 1, block_size):
            w = torch.tensor([stream[s : s + block_size + 1]])
            loss = model(input_ids=w, labels=w).loss  # mean over the w.shape[1] - 1 shifted targets
            total += loss.double() * (w.shape[1] - 1)
            n += w.shape[1] - 1
    return total, n, len(stream)


def test_paragraph_split(setup, tmp_path):
    assert list(iter_documents(str(setup["txt"]))) == setup["docs"]
    # As growth/data.py splits training text: "\n\n" separates, a line of spaces does not.
    (tmp_path / "t.txt").write_text("\n\na\nb\n\n\nc\n  \nd\n\n\n\n", encoding="utf-8")
    assert list(iter_documents(str(tmp_path / "t.txt"))) == ["a\nb", "c\n  \nd"]
    with pytest.raises(ValueError, match="--txt_docs: expected 'paragraph' or 'file', got 'line'"):
        next(iter_documents(str(tmp_path / "t.txt"), txt_docs="line"))


def test_loss_ppl_bpb_match_manual_computation(setup):
    r = evaluate(str(setup["ckpt"]), str(setup["txt"]), block_size=32, batch_size=3, device="cpu", dtype="float32", progress=False)
    total, n, n_stream = manual_nll(setup["model"], setup["tok"], setup["docs"], 32)
    assert n_stream > 4 * 33 and (n_stream - 1) % 32 != 0  # several windows and a shorter last one
    n_bytes = sum(len(d.encode("utf-8")) for d in setup["docs"])
    assert n_bytes > sum(len(d) for d in setup["docs"])  # non-ASCII text: bytes, not characters
    assert (r["tokens"], r["bytes"], r["documents"]) == (n, n_bytes, 10)
    torch.testing.assert_close(torch.tensor(r["loss"], dtype=torch.float64), total / n)
    assert r["perplexity"] == math.exp(r["loss"])
    assert r["bits_per_byte"] == r["nll_total_nats"] / math.log(2) / n_bytes
    torch.testing.assert_close(torch.tensor(r["nll_total_nats"], dtype=torch.float64), total)
    # A random model over ~300 tokens: loss near ln(300).
    assert abs(r["loss"] - math.log(300)) < 0.5


def test_batch_size_and_block_size(setup):
    stream, _, _ = build_stream(setup["docs"], setup["tok"])
    a = score_stream(setup["model"], stream, 16, batch_size=1, progress=False)
    b = score_stream(setup["model"], stream, 16, batch_size=7, progress=False)
    assert a[1] == b[1] == len(stream) - 1
    torch.testing.assert_close(torch.tensor(a[0]), torch.tensor(b[0]))
    # Longer context changes the NLL but not which tokens are scored.
    c = score_stream(setup["model"], stream, 100, batch_size=2, progress=False)
    assert c[1] == len(stream) - 1 and c[0] != a[0]
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings 128"):
        score_stream(setup["model"], stream, 129)


def test_max_tokens_bytes_are_those_of_the_scored_text(setup):
    tok, docs = setup["tok"], setup["docs"]
    eos = tok.eos_token_id
    full, _, _ = build_stream(docs, tok)
    for m in list(range(2, 60)) + [len(full) - 1, len(full), len(full) + 5]:
        stream, n_bytes, n_docs = build_stream(docs, tok, max_tokens=m)
        assert len(stream) <= m and stream[0] == eos
        if m >= 20:
            assert len(stream) >= 0.8 * min(m, len(full))  # the cut fills most of the budget
        # Split the stream at eos into the documents' scored token runs and decode them.
        runs, cur = [], []
        for t in stream[1:]:
            if t == eos:
                runs.append(cur)
                cur = []
            else:
                cur.append(t)
        if cur:
            runs.append(cur)
        texts = [tok.decode(r, clean_up_tokenization_spaces=False) for r in runs]
        assert len(texts) == n_docs
        assert texts[:-1] == docs[: n_docs - 1]
        if texts:
            assert docs[n_docs - 1].startswith(texts[-1])
        assert n_bytes == sum(len(t.encode("utf-8")) for t in texts)
    with pytest.raises(ValueError, match="--max_tokens: must be at least 2"):
        build_stream(docs, tok, max_tokens=1)


def test_jsonl_parquet_and_whole_file(setup, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = setup["docs"]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    pq.write_table(pa.table({"body": docs}), tmp_path / "v.parquet")
    kw = dict(block_size=32, device="cpu", dtype="float32", progress=False)
    ref = evaluate(str(setup["ckpt"]), str(setup["txt"]), **kw)
    for f in ("v.jsonl", "v.parquet"):
        r = evaluate(str(setup["ckpt"]), str(tmp_path / f), text_field="body", **kw)
        assert (r["loss"], r["bytes"], r["tokens"]) == (ref["loss"], ref["bytes"], ref["tokens"])
    whole = evaluate(str(setup["ckpt"]), str(setup["txt"]), txt_docs="file", **kw)
    assert whole["documents"] == 1 and whole["bytes"] == len(setup["txt"].read_bytes())
    with pytest.raises(ValueError, match=r"v.jsonl row 0 has no field 'text' \(fields: \['body', 'id'\]\)"):
        evaluate(str(setup["ckpt"]), str(tmp_path / "v.jsonl"), **kw)
    with pytest.raises(ValueError, match=r"v.parquet row 0 has no field 'text' \(fields: \['body'\]\)"):
        evaluate(str(setup["ckpt"]), str(tmp_path / "v.parquet"), **kw)
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        (tmp_path / "v.csv").write_text("text\nhello\n")
        evaluate(str(setup["ckpt"]), str(tmp_path / "v.csv"), **kw)


def test_cli(setup, tmp_path):
    # A Trainer layout: weights in out/checkpoint-5, the tokenizer one level up.
    out = tmp_path / "out"
    setup["model"].save_pretrained(out / "checkpoint-5")
    setup["tok"].save_pretrained(out)
    script = str(REPO / "eval" / "evaluate.py")
    res = subprocess.run(
        [sys.executable, script, str(out / "checkpoint-5"), "--data", str(setup["txt"]), "--block_size", "32", "--device", "cpu", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "r.json").read_text()) == printed
    ref = evaluate(str(setup["ckpt"]), str(setup["txt"]), block_size=32, device="cpu", dtype="float32", progress=False)
    assert printed["loss"] == pytest.approx(ref["loss"], rel=1e-6) and printed["dtype"] == "float32"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, script, str(setup["ckpt"]), "--data", "hf:someone/no_such_dataset", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 2
    assert "could not load hub dataset 'someone/no_such_dataset'" in res.stderr and "Offline?" in res.stderr


@pytest.mark.slow
def test_lm_eval_harness_scores_the_grown_checkpoint(setup, tmp_path):
    """A Trainer run grows 2 -> 4 layers and saves; lm-eval's HF model class loads that checkpoint
    from its path and scores the shipped local task: its bits per byte equal the grown model's own
    negative log-likelihood of the same documents, so all 4 layers and the trained weights are used."""
    import datasets
    import transformers

    from growth.models import ModelConfig, build_model
    from growth.trainer import enable_growth

    tok = setup["tok"]
    torch.manual_seed(0)
    # 2048 positions (rotary: no parameters) so that each document is scored in one window.
    cfg = ModelConfig(family="llama", hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=2048)
    model = build_model(cfg, len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (16, 32), generator=g).tolist()
    args = transformers.TrainingArguments(str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                                          use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no", logging_steps=1)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"input_ids": ids, "labels": ids}))
    enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": [[2, 4]]}})
    trainer.train()
    ckpt = tmp_path / "run" / "final"
    trainer.save_model(str(ckpt))
    tok.save_pretrained(ckpt)

    result = run_lm_eval(str(ckpt), "stdlib_heldout", device="cpu", dtype="float32", batch_size=2, limit=3)
    assert result["num_layers"] == 4 and set(result["lm_eval"]) == {"stdlib_heldout"}
    metrics = result["lm_eval"]["stdlib_heldout"]
    assert set(metrics) == {"bits_per_byte", "byte_perplexity", "word_perplexity"}

    docs = [json.loads(line)["text"] for line in (LM_EVAL_TASKS / "stdlib_heldout" / "stdlib_heldout.jsonl").read_text().splitlines()[:3]]
    grown = trainer.model.eval()
    assert grown.config.num_hidden_layers == 4
    nll, n_bytes = 0.0, 0
    with torch.no_grad():
        for doc in docs:
            ids = tok(doc, add_special_tokens=False)["input_ids"]
            assert len(ids) < 2048  # one window: lm-eval scores every token after its prefix token (eos)
            x = torch.tensor([[tok.eos_token_id] + ids])
            logits = grown(input_ids=x[:, :-1]).logits
            nll += torch.nn.functional.cross_entropy(logits[0].double(), x[0, 1:], reduction="sum").item()
            n_bytes += len(doc.encode("utf-8"))
    assert metrics["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    assert metrics["byte_perplexity"] == pytest.approx(2 ** metrics["bits_per_byte"], rel=1e-9)


def test_lm_eval_task_documents_are_held_out_of_training():
    from growth.data import in_validation

    rows = [json.loads(line) for line in (LM_EVAL_TASKS / "stdlib_heldout" / "stdlib_heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 22 and all(in_validation(r["path"], 0.05) for r in rows)
    assert all(600 <= len(r["text"]) <= 1500 and r["text"] == r["text"].rstrip() for r in rows)


def test_lm_eval_argument_errors(setup, capsys):
    with pytest.raises(ValueError, match="--lm-eval: expected comma-separated task names, got ' , '"):
        run_lm_eval(str(setup["ckpt"]), " , ")
    with pytest.raises(ValueError, match="--lm_eval_limit: must be positive, got 0"):
        run_lm_eval(str(setup["ckpt"]), "stdlib_heldout", limit=0)
    with pytest.raises(SystemExit) as e:
        main([str(setup["ckpt"])])
    assert e.value.code == 2 and "give --data, --lm-eval TASKS, or both" in capsys.readouterr().err
