"""Parity with the authors' code: each editor's delta against an independent plain
implementation written here from the papers' equations and the official repositories'
procedure (bahjat-kawar/time-diffusion `apply_time.py` + `train_funcs.train_closed_form`;
technion-cs-nlp/ReFACT `compute_u.py`, `compute_v.py`), per layer, in float64, on a tiny random
SD pipeline. Nothing here imports the editors' internals except to call the editor itself."""

import pytest
import torch

from editpersist.tasks.requests import EditRequest
from editpersist.families import get_family

CORPUS = ["a red circle", "a photo of a blue square", "a green triangle on a yellow cross", "a drawing of a king",
          "an image of a purple circle", "a picture of a queen", "a square", "a blue circle and a red square"] * 4


@pytest.fixture()
def sd64(tiny_model_dirs):
    pipe = get_family("sd").load(tiny_model_dirs["sd"])
    return pipe.to(torch.float64)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---- TIME ---------------------------------------------------------------------------------

def official_time_pairs(tok, old: str, new: str, length: int) -> list[int]:
    """apply_time.py's pairing, step for step."""
    a, b = tok(old).input_ids, tok(new).input_ids
    a_id = tok.encode("a ")[1]
    a = [a_id if tok.decode(t) == "an" else t for t in a]
    b = [a_id if tok.decode(t) == "an" else t for t in b]
    idxs, j = [], 0
    for token in a:
        while b[j] != token:
            j += 1
        idxs.append(j)
        j += 1
    while j < length:
        idxs.append(j)
        j += 1
    while len(idxs) < length:
        idxs.append(length - 1)
    return idxs


def official_augmentations(old: str, new: str) -> list[tuple[str, str]]:
    olds, news = [old], [new]
    for texts in (olds, news):
        base = texts[0] if texts[0][0:1] != "A" else "a" + texts[0][1:]
        texts += ["A photo of " + base, "An image of " + base, "A picture of " + base]
    return list(zip(olds, news))


def reference_time(pipe, old: str, new: str, lam: float, with_to_k: bool, with_augs: bool) -> dict:
    tok, length = pipe.tokenizer, pipe.tokenizer.model_max_length
    pairs = official_augmentations(old, new) if with_augs else [(old, new)]
    contexts, targets = [], []
    with torch.no_grad():
        for o, n in pairs:
            ids = tok([o, n], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
            old_emb, new_emb = pipe.text_encoder(ids)[0]
            contexts.append(old_emb)
            targets.append(new_emb[official_time_pairs(tok, o, n, length)])
    names = [n for n, m in pipe.unet.named_modules() if n.endswith("attn2.to_v")]
    if with_to_k:
        names += [n[: -len("to_v")] + "to_k" for n in names]
    out = {}
    for name in names:
        W = pipe.unet.get_submodule(name).weight.detach()
        mat1 = lam * W
        mat2 = lam * torch.eye(W.shape[1], dtype=W.dtype)
        for context, target in zip(contexts, targets):
            values = target @ W.T
            for k in range(length):  # sum over positions of v k^T and k k^T, one position at a time
                mat1 = mat1 + torch.outer(values[k], context[k])
                mat2 = mat2 + torch.outer(context[k], context[k])
        out[f"unet.{name}.weight"] = mat1 @ torch.inverse(mat2)
    return out


@pytest.mark.parametrize("old,new,augment", [("A circle", "A blue circle", False), ("A circle", "A blue circle", True),
                                             ("a king", "a blue king", True)])
def test_time_equals_the_official_closed_form(sd64, old, new, augment):
    from editpersist.editors.time import TIME, TIMEConfig

    family = get_family("sd")
    delta = TIME(TIMEConfig(lam=0.1, edit_keys=True, augment=augment)).edit(sd64, family, [EditRequest(old, new)])
    expected = reference_time(sd64, old, new, 0.1, with_to_k=True, with_augs=augment)
    assert set(delta.tensors) == set(expected)
    for key, W in expected.items():
        assert delta.tensors[key].dtype == torch.float64
        assert relative_error(delta.tensors[key], W) < 1e-5, key
        W0 = sd64.unet.get_submodule(key[len("unet."):-len(".weight")]).weight.detach()
        assert relative_error(delta.tensors[key] - W0, W - W0) < 1e-5, key  # the change itself, too


def test_time_pairs_non_subsequences_by_substitution(tokenizer_dirs):
    """The official pairing fails on these (IndexError); the documented rule instead."""
    from transformers import CLIPTokenizer

    from editpersist.editors.time import pair_positions

    tok = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    with pytest.raises(IndexError):
        official_time_pairs(tok, "a circle", "a square", 16)
    ids = lambda text: tok(text).input_ids  # noqa: E731
    # BOS a circle EOS -> BOS a square EOS: circle pairs with square, the tail continues after EOS.
    assert pair_positions(ids("a circle"), ids("a square"), 8) == [0, 1, 2, 3, 4, 5, 6, 7]
    # A longer source middle ends on the destination's last word; extra tokens on its first.
    assert pair_positions(ids("a red king"), ids("a triangle"), 6) == [0, 1, 2, 2, 3, 4]
    # A shorter one: right-aligned, so "king" pairs with "triangle", not "blue".
    assert pair_positions(ids("a king"), ids("a blue triangle"), 6) == [0, 1, 3, 4, 5, 5]
    # Subsequences keep the official pairing.
    assert pair_positions(ids("a circle"), ids("a blue circle"), 8) == official_time_pairs(
        tok, "a circle", "a blue circle", 8)


# ---- ReFACT -------------------------------------------------------------------------------

def fc2_io(encoder, layer: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {}
    fc2 = encoder.get_submodule(f"encoder.layers.{layer}.mlp.fc2")
    handle = fc2.register_forward_hook(lambda m, a, o: seen.update(k=a[0].detach(), o=o.detach()))
    with torch.no_grad():
        encoder(ids)
    handle.remove()
    return seen["k"], seen["o"]


def padded(tok, texts):
    return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")


def last_subject_token(tok, prompt: str, subject: str) -> int:
    """ROME's subject_last: the subject's last token in the prompt (BOS counted, EOS not)."""
    prefix = prompt[: prompt.rfind(subject) + len(subject)]
    return len(tok(prefix).input_ids) - 2


def reference_refact(pipe, layer, templates, source, target, original, C, lr, max_steps, stop_prob, clamp, wd):
    """compute_u + compute_v (contrastive_text, l2) + the rank-one update, as the official code."""
    enc, tok = pipe.text_encoder, pipe.tokenizer
    fc2 = enc.get_submodule(f"encoder.layers.{layer}.mlp.fc2")
    # compute_u: mean key over the context templates, then C^-1.
    keys = []
    for t in templates:
        prompt = t.format(source)
        keys.append(fc2_io(enc, layer, padded(tok, [prompt]).input_ids)[0][0, last_subject_token(tok, prompt, source)])
    u = torch.linalg.solve(C, torch.stack(keys).mean(0))
    u = u / u.norm()
    # compute_v: the rewriting prompts are the bare prompt plus the templates.
    prompts = list(dict.fromkeys(["{}".format(source)] + [t.format(source) for t in templates]))
    idxs = torch.tensor([last_subject_token(tok, p, source) for p in prompts])
    with torch.no_grad():
        text_features = enc(padded(tok, [target, original]).input_ids).pooler_output
    delta = torch.zeros(fc2.out_features, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    state = {"init": None}

    def edit_output(module, args, out):
        if state["init"] is None:
            state["init"] = out[0, idxs[0]].detach().clone()
        out = out.clone()
        for i, idx in enumerate(idxs):
            out[i, idx] += delta
        return out

    handle = fc2.register_forward_hook(edit_output)
    ids = padded(tok, prompts).input_ids
    for it in range(max_steps):
        opt.zero_grad()
        features = enc(ids).pooler_output
        scores = -torch.cdist(features[None], text_features[None])[0]
        log_probs = torch.log_softmax(scores, dim=1)
        loss = -log_probs[:, 0].mean() + wd * delta.norm() / state["init"].norm() ** 2
        if torch.exp(log_probs[:, 0]).mean().item() > stop_prob or it == max_steps - 1:
            break
        loss.backward()
        opt.step()
        max_norm = clamp * state["init"].norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    handle.remove()
    target_vec = state["init"] + delta.detach()
    k_in, o_out = fc2_io(enc, layer, padded(tok, [source]).input_ids)
    pos = last_subject_token(tok, source, source)
    right = (target_vec - o_out[0, pos]) / torch.dot(k_in[0, pos], u)
    return fc2.weight.detach() + torch.outer(right, u)


@pytest.mark.parametrize("steps", [3, 40])
def test_refact_equals_the_official_procedure(sd64, tmp_path, steps):
    from editpersist.editors.refact import ReFACT, ReFACTConfig, compute_and_cache_stats

    family = get_family("sd")
    layer, templates = 0, ("a photo of {}", "a drawing of {}", "{} and a circle")
    compute_and_cache_stats(sd64, get_family("sd").refact_sites(layer), CORPUS, tmp_path)
    from safetensors.torch import load_file

    C = load_file(next(tmp_path.glob("*.safetensors")))["C"].double()
    # C as the official layer_stats computes it: E[k k^T] over the corpus' real tokens.
    ks = []
    for text in CORPUS:
        enc = padded(sd64.tokenizer, [text])
        ks.append(fc2_io(sd64.text_encoder, layer, enc.input_ids)[0][0][enc.attention_mask[0].bool()])
    ks = torch.cat(ks)
    assert relative_error(C, ks.T @ ks / len(ks)) < 1e-6
    cfg = ReFACTConfig(layer=layer, templates=templates, lr=0.05, max_steps=steps, stop_prob=0.99,
                       max_norm_factor=4.0, weight_decay=0.1, loss="l2")
    request = EditRequest("a king", "a triangle", original="a square")
    delta = ReFACT(cfg, tmp_path).edit(sd64, family, [request])
    expected = reference_refact(sd64, layer, templates, "a king", "a triangle", "a square", C, 0.05, steps, 0.99,
                                4.0, 0.1)
    key = f"text_encoder.encoder.layers.{layer}.mlp.fc2.weight"
    W0 = sd64.text_encoder.get_submodule(f"encoder.layers.{layer}.mlp.fc2").weight.detach()
    assert relative_error(delta.tensors[key] - W0, expected - W0) < 1e-5
    assert delta.sidecar["optimisation"][0]["steps"] <= steps - 1


def test_refact_injection_adds_delta_to_each_prompts_own_subject_output(sd64):
    """During the optimisation each prompt's subject output is its own output plus delta (not
    v0 + delta for every prompt), and no other position changes."""
    from editpersist.editors.refact import add_at_subject

    enc, tok = sd64.text_encoder, sd64.tokenizer
    prompts = ["a king", "a photo of a king", "a drawing of a king"]
    positions = torch.tensor([last_subject_token(tok, p, "a king") for p in prompts])
    ids = padded(tok, prompts).input_ids
    _, clean = fc2_io(enc, 0, ids)
    delta = torch.randn(clean.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fc2 = enc.get_submodule("encoder.layers.0.mlp.fc2")
    seen = {}

    def inject(module, args, out):
        seen["o"] = add_at_subject(out, positions, delta)
        return seen["o"]

    handle = fc2.register_forward_hook(inject)
    with torch.no_grad():
        enc(ids)
    handle.remove()
    expected = clean.clone()
    for i, p in enumerate(positions):
        expected[i, p] = clean[i, p] + delta
    torch.testing.assert_close(seen["o"], expected, rtol=0, atol=1e-12)
    # The subject outputs differ between prompts, so overwriting with one v0 + delta would not.
    assert not torch.allclose(clean[0, positions[0]], clean[1, positions[1]])


def test_refact_losses_are_the_official_scores():
    from editpersist.editors.refact import destination_log_prob

    g = torch.Generator().manual_seed(1)
    e, targets = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(2, 6, generator=g, dtype=torch.float64)
    dist = torch.stack([((e - t) ** 2).sum(-1).sqrt() for t in targets], dim=1)
    expected_l2 = -dist[:, 0] - torch.log(torch.exp(-dist).sum(1))
    torch.testing.assert_close(destination_log_prob(e, targets, "l2"), expected_l2)
    cos = torch.stack([(e * t).sum(-1) / (e.norm(dim=-1) * t.norm()) for t in targets], dim=1)
    expected_cos = (100 * cos).log_softmax(1)[:, 0]
    torch.testing.assert_close(destination_log_prob(e, targets, "cosine"), expected_cos)


# ---- UCE ----------------------------------------------------------------------------------

def last_word_state(pipe, text: str) -> torch.Tensor:
    """The 2025 code's key: the text encoder's output at index attention_mask.sum() - 2."""
    enc = padded(pipe.tokenizer, [text])
    with torch.no_grad():
        states = pipe.text_encoder(enc.input_ids)[0][0]
    return states[int(enc.attention_mask.sum()) - 2]


def test_uce_equals_the_official_closed_form(sd64):
    """UCE 2025 (`token_mode: last`, lam 0.5, s_e = s_p = 1): per layer
    W = (lam W0 + sum_E (W0 c_dest) c^T + sum_P (W0 c_p) c_p^T)(lam I + sum_E c c^T + sum_P c_p c_p^T)^-1."""
    from editpersist.editors.uce import UCE, UCEConfig

    request = EditRequest("a circle", "a blue circle", preserve=("a square", "a king"))
    delta = UCE(UCEConfig(lam=0.5, s_e=1.0, s_p=1.0, token_mode="last")).edit(sd64, get_family("sd"), [request])
    c, c_dest = last_word_state(sd64, "a circle"), last_word_state(sd64, "a blue circle")
    preserve = [last_word_state(sd64, p) for p in request.preserve]
    for name, module in sd64.unet.named_modules():
        if not (name.endswith("attn2.to_k") or name.endswith("attn2.to_v")):
            continue
        W0 = module.weight.detach()
        mat1 = 0.5 * W0 + torch.outer(W0 @ c_dest, c) + sum(torch.outer(W0 @ p, p) for p in preserve)
        mat2 = 0.5 * torch.eye(W0.shape[1], dtype=W0.dtype) + torch.outer(c, c) + sum(torch.outer(p, p) for p in preserve)
        expected = mat1 @ torch.inverse(mat2)
        got = delta.tensors[f"unet.{name}.weight"]
        assert relative_error(got - W0, expected - W0) < 1e-5, name
