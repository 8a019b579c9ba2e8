#!/usr/bin/env python3
"""Records llama.cpp reference fixtures for longhaul's tests.

llama.cpp is reached through the Python package llama-cpp-python; it is the independent
implementation that longhaul's tokenizer, chat formatting and forward pass are compared with.
The engine itself never links llama.cpp: these files are the only bridge.

    python3 tools/record_fixtures.py --model ~/.cache/longhaul/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --name smollm2 --out tests/testdata/fixtures/smollm2

Writes tokenize.json, chat.json, hardening.json, greedy.json, logits.json and logits.bin into --out
(--only-hardening: hardening.json alone).
See tools/README.md for what each file holds.
"""

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_corpus  # noqa: E402  (the corpus lives beside this script)

GREEDY_STEPS = 64
N_CTX = 2048
N_BATCH = 512
# The logits fixture evaluates each prompt (up to ~1100 tokens) in one llama_decode call and
# one micro-batch, so n_batch and n_ubatch are raised to the context size there.
LOGITS_N_BATCH = 2048
# Number of corpus cases that also get detokenize results.
N_DETOKENIZE = 50
# Chat template names passed to llama.cpp when the GGUF carries no template.
BUILTIN_TEMPLATE = {"smollm2": b"chatml", "gemma3": b"gemma"}


def log(msg):
    print("[record_fixtures] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Output helpers: JSON with one case per line, so diffs stay readable and files compact.

def dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_json(path, header, list_key, items):
    """Writes {header..., list_key: [items]} with each item on its own line."""
    lines = ["{"]
    for key, value in header.items():
        lines.append("%s:%s," % (dumps(key), dumps(value)))
    lines.append("%s:[" % dumps(list_key))
    for i, item in enumerate(items):
        lines.append(dumps(item) + ("," if i + 1 < len(items) else ""))
    lines.append("]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(path, encoding="utf-8"))  # The file must parse back.


# ---------------------------------------------------------------------------------------
# llama.cpp access.

def model_settings(llm, n_batch, n_ubatch, logits_all):
    """The context settings a fixture was recorded with, read back from llama.cpp."""
    cp = llm.context_params
    fa = {llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED: "disabled",
          llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED: "enabled"}.get(cp.flash_attn_type, "auto")
    ggml_type = {0: "f32", 1: "f16", 8: "q8_0"}
    return {
        "n_ctx": llama_cpp.llama_n_ctx(llm._ctx.ctx),
        "n_batch": n_batch,
        "n_ubatch": n_ubatch,
        "n_threads": cp.n_threads,
        "n_threads_batch": cp.n_threads_batch,
        "flash_attn": fa,
        "type_k": ggml_type.get(cp.type_k, str(cp.type_k)),
        "type_v": ggml_type.get(cp.type_v, str(cp.type_v)),
        "swa_full": bool(cp.swa_full),
        "logits_all": logits_all,
        "use_extra_bufts": bool(llm.model_params.use_extra_bufts),
    }


def load_context(model_path, threads, n_ctx, n_batch, logits_all):
    # flash_attn=False is llama-cpp-python's default (llama.cpp's own default is "auto");
    # type_k/type_v are left at llama.cpp's default, an f16 KV cache.
    #
    # Llama() has no argument for llama_model_params.use_extra_bufts, so the default-params
    # function it calls is wrapped for the duration of the constructor.  With extra buffer
    # types on, ggml-cpu moves weights into its AMX and repacked-AVX layouts when the build
    # has them; a build with AMX segfaulted on the first llama_decode here
    # (ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36).  Without them every matmul runs
    # ggml's plain quantized dot products, so the fixtures do not depend on build flags.
    lowlevel = llama_cpp.llama_cpp
    original = lowlevel.llama_model_default_params

    def without_extra_bufts():
        params = original()
        params.use_extra_bufts = False
        return params

    lowlevel.llama_model_default_params = without_extra_bufts
    try:
        llm = llama_cpp.Llama(
            model_path=model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
            n_threads=threads, n_threads_batch=threads, logits_all=logits_all,
            flash_attn=False, seed=0, verbose=False)
    finally:
        lowlevel.llama_model_default_params = original
    if llm.model_params.use_extra_bufts:
        raise RuntimeError("could not turn off use_extra_bufts; llama_decode would use AMX")
    return llm


def last_logits(llm):
    """The logits llama.cpp produced for the last token of the latest llama_decode call."""
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()  # [n_vocab]


def top2(logits):
    """Index of the largest logit (first on ties, as llama.cpp's greedy sampler) and the gap."""
    best = int(np.argmax(logits))
    rest = np.delete(logits, best)
    return best, float(logits[best] - rest.max())


def detokenize_raw(vocab, ids, unparse_special):
    """llama.cpp's own llama_detokenize, returning exact bytes (may be invalid UTF-8)."""
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 64 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, unparse_special)
        if n >= 0:
            return buf.raw[:n]
        size = -n + 1


def chat_template(llm, name):
    """The template string handed to llama_chat_apply_template and a note on where it came from."""
    tmpl = llama_cpp.llama_model_chat_template(llm._model.model, None)
    if tmpl:
        return tmpl, "tokenizer.chat_template from the GGUF"
    return BUILTIN_TEMPLATE[name], "built-in template name '%s' (the GGUF has no template)" % (
        BUILTIN_TEMPLATE[name].decode())


def apply_chat(tmpl, messages, add_ass):
    # Keep the encoded strings alive while llama.cpp reads them.
    encoded = [(m["role"].encode("utf-8"), m["content"].encode("utf-8")) for m in messages]
    chat = (llama_cpp.llama_chat_message * len(encoded))()
    for i, (role, content) in enumerate(encoded):
        chat[i].role = role
        chat[i].content = content
    size = 256 + sum(len(r) + len(c) for r, c in encoded) * 2
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(encoded), add_ass, buf, size)
        if n < 0:
            raise RuntimeError("llama_chat_apply_template failed for template %r" % tmpl[:40])
        if n <= size:
            return buf.raw[:n].decode("utf-8")
        size = n + 1


# ---------------------------------------------------------------------------------------
# The four fixtures.

def record_tokenize(llm, header, out_dir):
    vocab = llm._model.vocab
    corpus = fixture_corpus.build_corpus()
    stride = max(1, len(corpus) // N_DETOKENIZE)
    cases = []
    mismatches = 0
    for i, c in enumerate(corpus):
        ids = llm.tokenize(c["text"].encode("utf-8"), add_bos=c["add_special"],
                           special=c["parse_special"])
        case = {"text": c["text"], "add_special": c["add_special"],
                "parse_special": c["parse_special"], "ids": ids}
        if i % stride == 0 or c["group"] == "special_parsed":
            plain = detokenize_raw(vocab, ids, unparse_special=False)
            case["decoded_hex"] = plain.hex()
            case["decoded_special_hex"] = detokenize_raw(vocab, ids, unparse_special=True).hex()
            # llama-cpp-python's own detokenize goes token by token; note where it differs.
            if llm.detokenize(ids) != plain:
                mismatches += 1
        cases.append(case)
    n_detok = sum(1 for c in cases if "decoded_hex" in c)
    log("tokenize: %d cases, %d with detokenize (%d differ from Llama.detokenize)"
        % (len(cases), n_detok, mismatches))
    hdr = dict(header)
    hdr["tokenize_call"] = ("Llama(model_path, vocab_only=True).tokenize(text.encode('utf-8'), "
                            "add_bos=add_special, special=parse_special)")
    hdr["detokenize_call"] = ("llama_detokenize(vocab, ids, remove_special=false, "
                              "unparse_special=false -> decoded_hex | true -> decoded_special_hex)")
    write_json(os.path.join(out_dir, "tokenize.json"), hdr, "cases", cases)
    return len(cases), n_detok, mismatches


def record_chat(llm, name, header, out_dir):
    tmpl, source = chat_template(llm, name)
    cases = []
    for messages, add_ass in fixture_corpus.CHAT_CASES:
        cases.append({"messages": messages, "add_generation_prompt": add_ass,
                      "text": apply_chat(tmpl, messages, add_ass)})
    hdr = dict(header)
    hdr["template_source"] = source
    hdr["template_passed"] = tmpl.decode("utf-8")
    write_json(os.path.join(out_dir, "chat.json"), hdr, "cases", cases)
    log("chat: %d cases (%s)" % (len(cases), source))
    return tmpl, len(cases)


def greedy_prompts(llm, tmpl):
    prompts = []
    for pname, text, messages in fixture_corpus.GREEDY_PROMPTS:
        chat = messages is not None
        if chat:
            text = apply_chat(tmpl, messages, True)
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        else:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        prompts.append({"name": pname, "text": text, "chat": chat,
                        "messages": messages, "prompt_ids": ids})
    return prompts


def record_greedy(llm, prompts, vocab, header, out_dir):
    """Greedy decoding one token at a time after a batched prompt evaluation."""
    results = []
    step_logits = {}
    for p in prompts:
        llm.reset()
        llm.eval(p["prompt_ids"])
        tokens, gaps, logits_seq = [], [], []
        stopped = False
        for _ in range(GREEDY_STEPS):
            logits = last_logits(llm)  # [n_vocab]
            tok, gap = top2(logits)
            tokens.append(tok)
            gaps.append(round(gap, 6))
            logits_seq.append(logits)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                stopped = True
                break
            llm.eval([tok])
        step_logits[p["name"]] = logits_seq
        entry = {"name": p["name"], "text": p["text"], "chat": p["chat"]}
        if p["chat"]:
            entry["messages"] = p["messages"]
        entry.update({"add_special": True, "parse_special": p["chat"],
                      "prompt_ids": p["prompt_ids"], "tokens": tokens, "top2_gaps": gaps,
                      "stopped_at_eos": stopped,
                      "decoded": detokenize_raw(vocab, tokens, False).decode("utf-8", "replace")})
        results.append(entry)
        log("greedy %-18s prompt %4d tokens, %2d generated%s, min gap %.4f"
            % (p["name"], len(p["prompt_ids"]), len(tokens),
               " (EOG)" if stopped else "", min(gaps)))
    hdr = dict(header)
    hdr["greedy_steps"] = GREEDY_STEPS
    hdr["method"] = ("prompt evaluated with Llama.eval (chunks of n_batch), then one token per "
                     "llama_decode; next token = argmax of the last logits (first index on "
                     "ties); stops early only when the argmax is an end-of-generation token")
    return hdr, results, step_logits


def batch_check(llm_all, results, step_logits):
    """Re-evaluates prompt + continuation in one batch and compares with the one-token run."""
    report = {}
    for r in results:
        seq = r["prompt_ids"] + r["tokens"][:-1]
        llm_all.reset()
        llm_all.eval(seq)
        n_prompt = len(r["prompt_ids"])
        agree, max_diff, disagree_steps = 0, 0.0, []
        for i, tok in enumerate(r["tokens"]):
            row = np.array(llm_all.scores[n_prompt - 1 + i])  # [n_vocab]
            best = int(np.argmax(row))
            if best == tok:
                agree += 1
            else:
                disagree_steps.append(i)
            max_diff = max(max_diff, float(np.abs(row - step_logits[r["name"]][i]).max()))
        report[r["name"]] = {"argmax_agree": agree, "steps": len(r["tokens"]),
                             "disagreement_steps": disagree_steps,
                             "top2_gaps_there": [r["top2_gaps"][i] for i in disagree_steps],
                             "max_abs_logit_diff": round(max_diff, 6)}
        log("batch check %-18s %d/%d argmax agree, max |dlogit| %.5f"
            % (r["name"], agree, len(r["tokens"]), max_diff))
    return report


def record_logits(llm_all, prompts, header, out_dir, dtype):
    """Full logit vectors at chosen positions of two prompts, from one batched evaluation."""
    chosen = [p for p in prompts if p["name"] in ("paragraph_300", "long_600")]
    np_dtype = np.float16 if dtype == "f16" else np.float32
    entries, blobs, offset = [], [], 0
    for p in chosen:
        ids = p["prompt_ids"]
        n = len(ids)
        positions = sorted({0, n // 2, n - 1} | ({511, 512} if n > 600 else set()))
        llm_all.reset()
        llm_all.eval(ids)
        offsets, stats = [], []
        for pos in positions:
            row = np.array(llm_all.scores[pos], dtype=np.float32)  # [n_vocab]
            order = np.argsort(-row, kind="stable")[:5]
            stats.append({"argmax": int(order[0]), "max": float(row.max()),
                          "min": float(row.min()), "top5_ids": [int(t) for t in order],
                          "top5_logits": [float(row[t]) for t in order]})
            blob = row.astype("<f2" if dtype == "f16" else "<f4").tobytes()
            offsets.append(offset)
            offset += len(blob)
            blobs.append(blob)
        entries.append({"name": p["name"], "prompt_ids": ids, "positions": positions,
                        "offsets": offsets, "stats": stats})
    with open(os.path.join(out_dir, "logits.bin"), "wb") as f:
        for b in blobs:
            f.write(b)
    hdr = dict(header)
    hdr.update({"n_vocab": llm_all.n_vocab(), "dtype": dtype,
                "element_bytes": np.dtype(np_dtype).itemsize,
                "byte_order": "little", "bin_file": "logits.bin",
                "method": ("Llama(logits_all=True).eval(prompt_ids) as one llama_decode call "
                           "(one micro-batch); vector for position p = logits after reading "
                           "prompt_ids[0..p]; offsets are byte offsets into logits.bin; stats "
                           "are computed from the float32 logits before conversion")})
    write_json(os.path.join(out_dir, "logits.json"), hdr, "prompts", entries)
    log("logits: %d vectors, %d bytes (%s)" % (sum(len(e["positions"]) for e in entries),
                                              offset, dtype))


def record_hardening(llm, name, header, out_dir):
    """hardening.json: invalid UTF-8 tokenization and chat messages that spell template markers.

    The chat ids are llama.cpp's own tokenization of its template's output with the messages kept as text: the
    template is applied to placeholder contents, its text is split at the control-token texts it wrote, each marker
    becomes its token and each stretch between markers (with the real contents put back) is tokenized with
    special=False, as llama.cpp tokenizes a fragment between control tokens."""
    invalid = []
    for raw in fixture_corpus.INVALID_UTF8:
        for add_special in (False, True):
            invalid.append({"text_hex": raw.hex(), "add_special": add_special,
                            "ids": llm.tokenize(raw, add_bos=add_special, special=False)})
    tmpl, source = chat_template(llm, name)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    control = set()
    for i in range(n_vocab):
        if llama_cpp.llama_vocab_get_attr(vocab, i) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            control.add(llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace"))
    chats = []
    for messages, add_ass in fixture_corpus.CHAT_INJECTION_CASES:
        holders = [dict(m, content="\x01%d\x01" % i) for i, m in enumerate(messages)]
        text = apply_chat(tmpl, holders, add_ass)
        ids = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
        pos = 0
        while pos < len(text):
            # The longest control-token text starting here, if any (the template's markers).
            marker = max((c for c in control if c and text.startswith(c, pos)), key=len, default=None)
            if marker is not None:
                ids += llm.tokenize(marker.encode("utf-8"), add_bos=False, special=True)
                pos += len(marker)
                continue
            end = pos
            while end < len(text) and not any(c and text.startswith(c, end) for c in control):
                end += 1
            stretch = text[pos:end]
            for i, m in enumerate(messages):
                content = m["content"].strip() if name == "gemma3" else m["content"]  # Gemma's template trims
                stretch = stretch.replace("\x01%d\x01" % i, content)
            ids += llm.tokenize(stretch.encode("utf-8"), add_bos=False, special=False)
            pos = end
        chats.append({"messages": messages, "add_generation_prompt": add_ass, "ids": ids})
    hdr = dict(header)
    hdr["template_source"] = source
    hdr["invalid_utf8_call"] = "Llama(model_path, vocab_only=True).tokenize(bytes, add_bos=add_special, special=False)"
    hdr["chat_method"] = record_hardening.__doc__.split("\n\n", 1)[1].strip()
    path = os.path.join(out_dir, "hardening.json")
    lines = ["{"] + ["%s:%s," % (dumps(k), dumps(v)) for k, v in hdr.items()]
    lines.append('"invalid_utf8":[' + ",\n".join(dumps(c) for c in invalid) + "],")
    lines.append('"chat_injection":[' + ",\n".join(dumps(c) for c in chats) + "]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(path, encoding="utf-8"))
    log("hardening: %d invalid UTF-8 cases, %d chat injection cases" % (len(invalid), len(chats)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="path to the .gguf file")
    ap.add_argument("--name", required=True, choices=sorted(BUILTIN_TEMPLATE))
    ap.add_argument("--out", required=True, help="output folder, e.g. tests/testdata/fixtures/smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logits-dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--only-hardening", action="store_true",
                    help="write only hardening.json (invalid UTF-8, chat injection), leaving the other files")
    ap.add_argument("--skip-batch-check", action="store_true",
                    help="do not re-run the greedy sequences in one batch")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    base = {"model": os.path.basename(args.model),
            "llama_cpp_python_version": llama_cpp.__version__,
            "recorded_by": "tools/record_fixtures.py",
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()}

    vocab_llm = llama_cpp.Llama(args.model, vocab_only=True, verbose=False)
    record_hardening(vocab_llm, args.name, base, args.out)
    if args.only_hardening:
        return
    n_cases, n_detok, detok_mismatch = record_tokenize(vocab_llm, base, args.out)
    tmpl, n_chat = record_chat(vocab_llm, args.name, base, args.out)

    llm = load_context(args.model, args.threads, N_CTX, N_BATCH, logits_all=False)
    vocab = llm._model.vocab
    prompts = greedy_prompts(llm, tmpl)
    gheader = dict(base)
    gheader["llama_cpp_settings"] = model_settings(llm, N_BATCH, N_BATCH, False)
    gheader, results, step_logits = record_greedy(llm, prompts, vocab, gheader, args.out)
    del llm

    llm_all = load_context(args.model, args.threads, N_CTX, LOGITS_N_BATCH, logits_all=True)
    lheader = dict(base)
    lheader["llama_cpp_settings"] = model_settings(llm_all, LOGITS_N_BATCH, LOGITS_N_BATCH, True)
    if not args.skip_batch_check:
        gheader["batch_check"] = batch_check(llm_all, results, step_logits)
        gheader["batch_check_method"] = (
            "prompt + tokens[:-1] evaluated in one llama_decode (logits_all, n_ubatch %d); "
            "argmax at each step compared with the recorded token" % LOGITS_N_BATCH)
    write_json(os.path.join(args.out, "greedy.json"), gheader, "prompts", results)
    record_logits(llm_all, prompts, lheader, args.out, args.logits_dtype)
    log("done in %.0f s: %d tokenize cases (%d detokenized, %d differ from Llama.detokenize), "
        "%d chat cases, %d greedy prompts" % (time.time() - started, n_cases, n_detok,
                                              detok_mismatch, n_chat, len(results)))


if __name__ == "__main__":
    main()
