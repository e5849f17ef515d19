"""Logic of the eval fast paths: the folded halting head, the CPU split of the rows, bucketed sub-batches
and CUDA graphs give the results of the plain paths. No timing is asserted (that is the benchmark's job)."""
import pytest
import torch
from torch import nn

from pact_zoo.halting import AdaptiveStage, HaltingHead, set_execution
from pact_zoo.halting.compaction import CompactionCost, bucket_size, pad_rows, split_rows
from pact_zoo.halting.stage import DEFAULT_BUCKETS, measure_compaction_cost, set_bucketing

CHS = 4


def random_head(act_layer=None, bias: float = 0.3) -> HaltingHead:
    head = HaltingHead(CHS, act_layer=act_layer, bias_init=bias)
    with torch.no_grad():
        head.fc.weight.normal_(std=2.0)
        head.norm.weight.uniform_(0.5, 2.0)
        head.norm.bias.normal_()
        head.norm.running_mean.normal_()
        head.norm.running_var.uniform_(0.5, 2.0)
    return head.eval()


def reference_logits(head: HaltingHead, x: torch.Tensor) -> torch.Tensor:
    """The unfolded head (pool -> BN -> act -> Linear), computed by hand."""
    normed = nn.functional.batch_norm(x.mean(dim=(2, 3)), head.norm.running_mean, head.norm.running_var,
                                      head.norm.weight, head.norm.bias, training=False, eps=head.norm.eps)
    return head.fc(head.act(normed)).squeeze(-1)


@pytest.mark.parametrize("act_layer", [None, lambda: nn.LeakyReLU(0.1)], ids=["identity", "leaky_relu"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_head_equals_unfolded(act_layer, channels_last):
    head = random_head(act_layer)
    x = torch.randn(5, CHS, 6, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference_logits(head, x)
    with torch.inference_mode():
        assert head._can_fold(x)
        folded = head(x)
        folded_again = head(x[:2])  # cached
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded_again, expected[:2], atol=1e-5, rtol=1e-5)


def test_folded_head_follows_weight_changes():
    head = random_head()
    x = torch.randn(3, CHS, 4, 4)
    with torch.inference_mode():
        head(x)  # fills the cache
    with torch.no_grad():  # in place: the version counter moves
        head.fc.weight.mul_(-1.0)
        head.norm.running_mean.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(head(x), reference_logits(head, x), atol=1e-5, rtol=1e-5)
    head.load_state_dict(random_head(bias=-1.0).state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(head(x), reference_logits(head, x), atol=1e-5, rtol=1e-5)
    head.fc.weight = nn.Parameter(torch.randn(1, CHS))  # replaced
    with torch.inference_mode():
        torch.testing.assert_close(head(x), reference_logits(head, x), atol=1e-5, rtol=1e-5)
    head.fc.bias.data.fill_(5.0)  # .data bypasses the version counter: seen without eval()
    with torch.inference_mode():
        torch.testing.assert_close(head(x), reference_logits(head, x), atol=1e-5, rtol=1e-5)


def fresh_copy(head: HaltingHead) -> HaltingHead:
    """A newly built head with ``head``'s current weights and activation (no cache)."""
    twin = HaltingHead(CHS, act_layer=type(head.act) if not isinstance(head.act, nn.Identity) else None)
    twin.act = head.act
    twin.norm.eps = head.norm.eps
    twin.load_state_dict(head.state_dict())
    return twin.eval()


EDITS = {
    "data_mul": lambda head: head.fc.weight.data.mul_(2.0),
    "data_copy": lambda head: head.norm.running_var.data.copy_(torch.rand(CHS) + 0.5),
    "data_of_every_tensor": lambda head: [t.data.add_(0.25) for t in (*head.parameters(), *head.buffers())
                                          if t.is_floating_point()],
    "data_assigned": lambda head: setattr(head.norm.bias, "data", torch.randn(CHS)),
    "no_grad_copy": lambda head: head.norm.weight.copy_(torch.rand(CHS) + 0.5),
    "load_state_dict": lambda head: head.load_state_dict(random_head(bias=-2.0).state_dict()),
    "numpy_view": lambda head: head.fc.bias.detach().numpy().__setitem__(0, 4.0),
    "eps": lambda head: setattr(head.norm, "eps", 0.5),
    "act_replaced": lambda head: setattr(head, "act", nn.LeakyReLU(0.2)),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
@pytest.mark.parametrize("act_layer", [None, lambda: nn.LeakyReLU(0.1)], ids=["identity", "leaky_relu"])
def test_folded_head_is_never_stale(edit, mode, act_layer):
    """Any edit of the weights after the folded cache was filled (``.data`` included, which bypasses the version
    counter) is seen by the next eval call: the output equals a freshly built head's."""
    head = random_head(act_layer)
    x = torch.randn(3, CHS, 4, 5)
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    with context():
        before = head(x)  # fills the cache
        assert head.__dict__.get("_folded") is not None
    with torch.no_grad():
        EDITS[edit](head)
    with context():
        after = head(x)
        expected = fresh_copy(head)(x)
    assert not torch.allclose(before, expected)  # the edit changed the logits
    torch.testing.assert_close(after, expected, atol=1e-6, rtol=0)


def test_folded_head_caches_weights_made_in_inference_mode():
    """Weights created inside ``inference_mode`` (no version counter) are folded once and reused."""
    with torch.inference_mode():
        head = random_head()
        x = torch.randn(2, CHS, 3, 3)
        head(x)
        first = head.folded(3, 3, False)
        head(x)
        assert head.folded(3, 3, False) is first
        torch.testing.assert_close(head(x), reference_logits(head, x), atol=1e-5, rtol=1e-5)


def test_head_is_not_folded_with_gradients_or_in_training():
    head = random_head()
    x = torch.randn(3, CHS, 4, 4)
    logits = head(x)  # eval, gradients on: the module path, differentiable in the head's parameters
    logits.sum().backward()
    assert head.fc.weight.grad is not None and head.norm.weight.grad is not None
    head.train()
    with torch.no_grad():
        assert not head._can_fold(x)
    hook = head.fc.register_forward_hook(lambda *args: None)  # a hook (e.g. the FLOPs profiler) must see the fc
    head.eval()
    with torch.inference_mode():
        assert not head._can_fold(x)
    hook.remove()


def test_split_rows_cpu_matches_stable_order():
    generator = torch.Generator().manual_seed(0)
    for size in (1, 2, 9, 64):
        stop = torch.rand(size, generator=generator) < 0.4
        keep, halted = split_rows(stop, int(stop.sum()))
        assert keep.tolist() == [i for i in range(size) if not stop[i]]
        assert halted.tolist() == [i for i in range(size) if stop[i]]


def test_bucket_size_and_pad_rows():
    assert [bucket_size(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 9]
    x = torch.randn(3, CHS, 2, 2).contiguous(memory_format=torch.channels_last)
    padded = pad_rows(x, 8)
    assert padded.shape[0] == 8 and padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[:3], x) and torch.equal(padded[5], x[0])
    assert pad_rows(x, 3) is x
    assert list(DEFAULT_BUCKETS) == sorted(set(DEFAULT_BUCKETS))


class ContextUnit(nn.Module):
    """``unit(x, context)``: a conv unit whose output depends on a per-row context vector ``[B, C]``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(CHS, CHS, 3, padding=1)
        self.norm = nn.BatchNorm2d(CHS)

    def forward(self, x, context):
        return x + torch.tanh(self.norm(self.conv(x)) + context[:, :, None, None])


def context_stage(method: str, num_units: int = 6) -> AdaptiveStage:
    torch.manual_seed(0)
    heads = [HaltingHead(CHS, bias_init=0.0) for _ in range(num_units - 1)]
    for head in heads:
        nn.init.normal_(head.fc.weight, std=3.0)
    stage = AdaptiveStage([ContextUnit() for _ in range(num_units)], heads, method=method).eval()
    with torch.no_grad():
        for module in stage.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
    return stage


@pytest.mark.parametrize("method", ["pact", "act"])
def test_bucketed_compaction_equals_unbucketed(method):
    stage = context_stage(method)
    x, context = torch.randn(11, CHS, 5, 5), torch.randn(11, CHS)
    with torch.inference_mode():
        expected = stage(x, context)
        units = stage.record.units_executed.clone()
        assert 1 < len(units.unique())  # depth differs between rows: sub-batches of several sizes
        set_bucketing(stage, (1, 2, 4, 8, 16))
        bucketed = stage(x, context)
        assert torch.equal(stage.record.units_executed, units)
        set_bucketing(stage, None)
        assert stage.buckets is None
    torch.testing.assert_close(bucketed, expected, atol=1e-5, rtol=1e-5)
    stage.train()  # training forwards are never padded (batch statistics would see the padding)
    set_bucketing(stage, (16,))
    assert stage._run_unit_compact(0, x, context).shape[0] == 11


@pytest.mark.parametrize("row_seconds", [0.0, 1e-3, 1.0], ids=["never_pays", "sometimes", "always_pays"])
@pytest.mark.parametrize("method", ["pact", "policy_gradient"])
def test_deferred_compaction_equals_immediate(method, row_seconds):
    stage = context_stage(method, num_units=7)
    x, context = torch.randn(13, CHS, 5, 5), torch.randn(13, CHS)
    with torch.inference_mode():
        expected = stage(x, context)
        units = stage.record.units_executed.clone()
        assert len(units.unique()) > 2
        # "sometimes": a gather pays once 2+ halted rows sit in the batch (1e-3 * dead >= 1e-3 + live * 1e-5)
        stage.compaction_cost = CompactionCost([row_seconds] * 7, gather_seconds=1e-3, gather_row_seconds=1e-5)
        deferred = stage(x, context)
        assert torch.equal(stage.record.units_executed, units)
        torch.testing.assert_close(deferred, expected, atol=1e-5, rtol=1e-5)
        set_bucketing(stage, (4, 8, 16))  # with dead rows and padded rows together
        torch.testing.assert_close(stage(x, context), expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(stage.record.units_executed, units)


def test_measure_compaction_cost_of_a_stage():
    stage = context_stage("pact", num_units=3)
    cost = measure_compaction_cost(stage, torch.randn(6, CHS, 5, 5), torch.randn(6, CHS), repeats=1)
    assert len(cost.row_seconds) == 3 and all(t >= 0 for t in cost.row_seconds)
    assert cost.gather_seconds >= 0 and cost.gather_row_seconds >= 0
    assert cost.pays(0, dead=1, live=0) == (cost.row_seconds[0] >= cost.gather_seconds)
    with pytest.raises(ValueError, match="at least 2 rows"):
        measure_compaction_cost(stage, torch.randn(1, CHS, 5, 5), torch.randn(1, CHS))


def test_set_bucketing_rejects_bad_buckets():
    stage = context_stage("pact")
    with pytest.raises(ValueError, match="buckets must be ascending"):
        set_bucketing(stage, (4, 2))
    with pytest.raises(ValueError, match="cuda_graphs needs buckets"):
        set_bucketing(stage, None, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_equal_eager():
    stage = context_stage("pact").cuda()
    x, context = torch.randn(11, CHS, 5, 5, device="cuda"), torch.randn(11, CHS, device="cuda")
    with torch.inference_mode():
        expected = stage(x, context)
        units = stage.record.units_executed.clone()
        set_bucketing(stage, (1, 2, 4, 8, 16), cuda_graphs=True)
        for _ in range(2):  # capture, then replay
            graphed = stage(x, context)
            torch.testing.assert_close(graphed, expected, atol=1e-4, rtol=1e-4)
            assert torch.equal(stage.record.units_executed, units)
        set_execution(stage, "masked")
        torch.testing.assert_close(stage(x, context), expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# The lone-row loop: a batch of one, and the last row left of a batch, run without split, gather or count
WIDTH, NUM_UNITS, SHARP = 5, 6, 40.0


class CountingUnit(nn.Module):
    """Adds 1 to feature 0 (the units run so far) and a nonlinear update to features 2.. (the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = torch.zeros(WIDTH)
        step[0] = 1.0
        update = torch.tanh(self.fc(x))
        update = torch.cat([torch.zeros_like(update[:, :2]), update[:, 2:]], dim=1)
        return x + step + update


def depth_stage(method: str) -> AdaptiveStage:
    """Heads whose logit is SHARP * (units run - target + 1/2), the target depth being feature 1 of the input: under
    every head method (threshold rule, ACT's accumulated probability) a row stops after exactly its target units."""
    from pact_zoo.halting import VectorHaltingHead

    torch.manual_seed(0)
    heads = [VectorHaltingHead(WIDTH) for _ in range(NUM_UNITS - 1)]
    with torch.no_grad():
        for head in heads:
            head.fc.weight.zero_()
            head.fc.weight[0, 0], head.fc.weight[0, 1] = SHARP, -SHARP
            head.fc.bias.fill_(SHARP / 2)
    return AdaptiveStage([CountingUnit() for _ in range(NUM_UNITS)], heads, method=method).eval()


def _head_methods() -> list[str]:
    from pact_zoo.halting import HALTING_METHODS

    return [name for name, cls in HALTING_METHODS.items() if cls.uses_heads and not cls.reads_exits]


@pytest.mark.parametrize("method", _head_methods())
@pytest.mark.parametrize("targets", [[3], [6], [1, 4], [1, 2, 6, 2, 1, 4]],
                         ids=["alone-stops-early", "alone-to-the-end", "last-row-stops-early", "last-row-to-the-end"])
def test_lone_row_loop_equals_masked(method, targets):
    """Outputs, units and costs of the lone-row loop (a batch of one, and the last row left of a batch, which the
    targets make run several units alone) equal the masked path's."""
    stage = depth_stage(method)
    x = torch.randn(len(targets), WIDTH)
    x[:, 0] = 0.0
    x[:, 1] = torch.tensor(targets, dtype=torch.float32)
    with torch.inference_mode():
        compact = stage(x)
        record = stage.record
        stage.execution = "masked"
        masked = stage(x)
    assert record.units_executed.tolist() == targets
    assert torch.equal(record.units_executed, stage.record.units_executed)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=0)
    torch.testing.assert_close(record.cost, stage.record.cost, atol=1e-5, rtol=0)


def test_lone_row_threshold_rule_compares_as_the_tensor_rule():
    """lone_row_threshold is the threshold rounded as the float32 comparison rounds it: a logit equal to
    float32(logit(t)) stops under both rules, whatever the rounding direction."""
    from pact_zoo.halting import HALTING_METHODS
    from pact_zoo.halting.pact import greedy_stop

    for name, cls in HALTING_METHODS.items():
        method = cls()
        if method.lone_row_threshold("greedy") is None:
            continue
        for threshold in (0.3, 0.5, 0.7, 0.99, 1.0):
            method.set_knob("threshold", threshold)
            limit = method.lone_row_threshold("greedy")
            below = torch.nextafter(torch.tensor([limit]), torch.tensor([-float("inf")]))
            for value in (torch.tensor([limit]), below):
                assert bool(greedy_stop(value, threshold)) == (value.item() >= limit), (name, threshold)
        assert method.lone_row_threshold("sample") is None, name


@pytest.mark.parametrize("rows", [1, 3])
def test_eval_head_rejects_non_finite_logits(rows):
    head = random_head()
    with torch.no_grad():
        head.fc.bias.fill_(float("nan"))
    with torch.no_grad(), pytest.raises(ValueError, match="NaN or inf"):
        head(torch.randn(rows, CHS, 3, 3))


# ---------------------------------------------------------------------------------------------------------------------
def test_padding_trim_cuts_to_the_used_span_and_restores():
    from pact_zoo.halting.compaction import PaddingTrim

    mask = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]])  # columns 1..3 used
    state = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    trim = PaddingTrim(6)
    cut, cut_mask = trim.trim(state, mask)
    assert (trim.start, trim.stop) == (1, 4)
    assert torch.equal(cut, state[:, 1:4]) and torch.equal(cut_mask, mask[:, 1:4])
    restored = trim.restore(cut)
    assert torch.equal(restored[:, 1:4], state[:, 1:4]) and not restored[:, [0, 4, 5]].any()
    cut, cut_mask = trim.trim(cut[1:], cut_mask[1:])  # a later compaction narrows the span further
    assert (trim.start, trim.stop) == (2, 4) and torch.equal(cut, state[1:, 2:4])
    full = PaddingTrim(6)
    same_state, same_mask = full.trim(state, torch.ones(2, 6, dtype=torch.long))
    assert same_state is state and full.restore(same_state) is state
    with pytest.raises(ValueError, match="mask"):
        PaddingTrim(6).trim(state, mask[:, :5])
