"""The SimSID torch model: sizes, memory read, queue, gradient isolation, training pass, scoring."""

from __future__ import annotations

import pytest
import torch

from anomalib_simsid.models.simsid.config import SimSIDConfig
from anomalib_simsid.models.simsid.loss import DiscriminatorLoss, GeneratorLoss
from anomalib_simsid.models.simsid.networks.blocks import patchify, stitch
from anomalib_simsid.models.simsid.networks.inpainting import position_bits
from anomalib_simsid.models.simsid.networks.memory import MemoryQueue, sparse_read
from anomalib_simsid.models.simsid.torch_model import SimSIDModel

SMALL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(("memory", "expected"), [("matrix", 46_107_906), ("queue", 44_469_506)])
def test_paper_parameter_counts(memory: str, expected: int) -> None:
    model = SimSIDModel(SimSIDConfig(memory=memory))
    assert _count(model.generator) == expected
    assert _count(model.discriminator) == 1_093_953


def test_paper_shapes() -> None:
    model = SimSIDModel(SimSIDConfig(memory="queue")).train()
    out = model(torch.rand(2, 3, 128, 128) * 2 - 1).generated
    assert out.reconstruction.shape == (2, 1, 128, 128)
    assert out.queries.shape == (2, 4, 2048)
    # per-patch decoder levels (4 patches per image), then full images after the stitch
    assert [tuple(f.shape) for f in out.features] == [
        (8, 256, 8, 8),
        (2, 128, 32, 32),
        (2, 64, 64, 64),
        (2, 32, 128, 128),
    ]
    assert [f.shape for f in out.teacher_features] == [f.shape for f in out.features]
    assert model.generator.inpainting.memory.memory.shape == (4, 200, 2048)
    assert [m.memory.weight.shape[1:] for m in model.generator.student.memories] == [(200, 4096), (200, 8192)]


def test_position_code_is_msb_first_with_one_spare_bit() -> None:
    assert position_bits(4).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_patchify_is_row_major_and_inverted_by_stitch() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    patches = patchify(x, 2)
    assert patches[1].flatten().tolist() == [2, 3, 6, 7]  # top-right
    assert torch.equal(stitch(patches, 2), x)


def test_topk_read_keeps_k_minus_one_slots_and_sums_to_one() -> None:
    torch.manual_seed(0)
    memory = torch.randn(200, 16)
    query = torch.randn(3, 16)
    read = sparse_read(query, memory, topk=5)
    probs = torch.softmax(query @ memory.t(), dim=-1)
    kept = probs > torch.topk(probs, 5, dim=-1).values[:, -1:]
    assert kept.sum(dim=-1).tolist() == [4, 4, 4]
    expected = (probs * kept) / (probs * kept).sum(-1, keepdim=True) @ memory
    torch.testing.assert_close(read, expected)


def test_topk_read_passes_the_dense_softmax_gradient() -> None:
    """Straight-through: the query gradient equals that of the dense softmax read (all logits)."""
    torch.manual_seed(0)
    memory = torch.randn(50, 8)
    query = torch.randn(2, 8, requires_grad=True)
    grad_out = torch.randn(2, 8)
    (sparse_read(query, memory, topk=5) * grad_out).sum().backward()
    sparse_grad = query.grad.clone()
    query.grad = None
    (sparse_read(query, memory, topk=0) * grad_out).sum().backward()
    torch.testing.assert_close(sparse_grad, query.grad)


def test_queue_is_not_trained_and_fills_fifo() -> None:
    queue = MemoryQueue(num_memory=2, num_slots=5, slot_dim=3, topk=2)
    assert not list(queue.parameters())
    query = torch.randn(4, 2, 3, requires_grad=True)
    queue(query).sum().backward()
    assert query.grad is not None
    assert queue.memory.grad is None
    batches = [torch.full((2, 2, 3), float(i)) for i in range(1, 5)]
    for batch in batches[:2]:
        queue.write(batch)
    assert queue.ptr.item() == 4
    assert queue.memory[0, :4, 0].tolist() == [1, 1, 2, 2]
    queue.write(batches[2])  # wraps around: slot 4, then slot 0
    assert queue.ptr.item() == 1
    assert queue.memory[1, :, 0].tolist() == [3, 1, 2, 2, 3]
    assert "ptr" in queue.state_dict()


def test_teacher_loss_reaches_only_the_teacher_and_distillation_reaches_both() -> None:
    torch.manual_seed(0)
    model = SimSIDModel(SimSIDConfig(**SMALL)).train()
    image = torch.rand(2, 1, 64, 64) * 2 - 1
    out = model(image)
    loss = GeneratorLoss(recon=0, teacher=1, dist=0, adv=0)
    total, _ = loss(out, torch.zeros(2))
    total.backward()
    gen = model.generator
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.teacher.parameters())
    for part in (gen.encoder, gen.inpainting, gen.student):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in part.parameters())

    model.zero_grad(set_to_none=True)
    out = model(image)
    total, _ = GeneratorLoss(recon=0, teacher=0, dist=1, adv=0)(out, torch.zeros(2))
    total.backward()
    for part in (gen.teacher, gen.encoder, gen.student):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_critic_only_training_pass_skips_autograd_and_teacher_but_not_the_critic() -> None:
    """``full_pass=False`` (critic-only batches): no generator graph, no teacher, same reconstruction."""
    model = SimSIDModel(SimSIDConfig(**SMALL)).train()
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.manual_seed(0)
    lean = model(image, full_pass=False)
    torch.manual_seed(0)
    full = model(image)
    assert lean.generated.teacher_reconstruction is None
    assert lean.generated.teacher_features is None
    assert not lean.generated.reconstruction.requires_grad
    assert full.generated.reconstruction.requires_grad
    assert full.generated.teacher_features is not None
    torch.testing.assert_close(lean.generated.reconstruction, full.generated.reconstruction)
    assert lean.real_logits.requires_grad
    assert lean.fake_logits.requires_grad
    assert lean.image.shape == (2, 1, 64, 64)
    DiscriminatorLoss()(lean).backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())


def test_eval_output_and_batch_independent_scores() -> None:
    torch.manual_seed(0)
    model = SimSIDModel(SimSIDConfig(**SMALL))
    # train-mode passes move BN statistics away from their init, so eval BN is not trivial
    with torch.no_grad():
        for _ in range(3):
            model.train()(torch.rand(4, 3, 64, 64) * 2 - 1)
    model.eval()
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        batched = model(images)
        alone = torch.cat([model(images[i : i + 1]).pred_score for i in range(4)])
    assert batched.pred_score.shape == (4,)
    assert batched.anomaly_map.shape == (4, 1, 64, 64)
    torch.testing.assert_close(batched.pred_score, alone, rtol=0, atol=1e-5)


def test_running_stats_option_differs_from_per_sample() -> None:
    torch.manual_seed(0)
    model = SimSIDModel(SimSIDConfig(**SMALL, disc_eval_norm="running")).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        running = model(images).pred_score
        model.discriminator.eval_norm = "per_sample"
        per_sample = model(images).pred_score
    assert not torch.allclose(running, per_sample)


def test_eval_mode_writes_nothing_and_draws_no_masks() -> None:
    model = SimSIDModel(SimSIDConfig(**SMALL, memory="queue", inpaint_mask_ratio=0.5)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        first = model(images).pred_score
        second = model(images).pred_score
    assert torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"img_size": 100}, "multiple of 32"),
        ({"img_size": 96, "num_patch": 2, "level": 5}, "num_patch \\* 2\\*\\*level = 64"),
        ({"memory": "ring"}, "memory kind must be one of"),
        ({"disc_eval_norm": "batch"}, "eval_norm must be"),
        ({"img_size": 64, "level": 1}, "level must be at least 2"),
        ({"score": "lowpass_residual"}, "score must be one of"),
    ],
)
def test_bad_sizes_and_options_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimSIDModel(SimSIDConfig(**kwargs))
