"""Host-side masks (mlcore/engine/transfer.py): the CUDA path's batches give the same logits
as the plain ones, for both poolings, so the GPU path computes what the CPU path computes."""
import pytest
import torch

from mlcore.engine import transfer
from mlcore.engine.batching import collate
from mlcore.models import classifier_pooling, modeling


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("padded", [True, False])
def test_host_side_masks_give_the_same_logits(tiny_base_dir, pooling, padded):
    model, _ = modeling.load_classifier(tiny_base_dir, {"a": 0, "b": 1}, pooling=pooling)
    model.eval()
    seqs = [[2, 11, 12, 13, 3], [2, 14, 3]] if padded else [[2, 11, 12, 3], [2, 14, 15, 3]]
    plain = collate(seqs, pad_id=0)
    masked = transfer.host_side_masks(plain)
    assert ("encoder_mask" in masked) is padded
    assert (masked["attention_mask"] is None) is not padded
    with torch.no_grad():
        want = classifier_pooling.logits(model, plain["input_ids"], plain["attention_mask"])
        got = classifier_pooling.logits(model, masked["input_ids"], masked["attention_mask"],
                                        masked.get("encoder_mask"))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_cpu_path_moves_the_batch_as_it_is():
    batch = collate([[2, 11, 3], [2, 3]], pad_id=0) | {"labels": torch.tensor([0, 1])}
    moved = transfer.to_device(batch, torch.device("cpu"))
    assert set(moved) == set(batch)
    for key, value in batch.items():
        assert torch.equal(moved[key], value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_on_cuda_the_moved_batch_gives_the_cpu_logits(tiny_base_dir, pooling):
    model, _ = modeling.load_classifier(tiny_base_dir, {"a": 0, "b": 1}, pooling=pooling)
    model.eval()
    for seqs in ([[2, 11, 12, 13, 3], [2, 14, 3]], [[2, 11, 12, 3], [2, 14, 15, 3]]):
        batch = collate(seqs, pad_id=0)
        with torch.no_grad():
            want = classifier_pooling.logits(model, batch["input_ids"], batch["attention_mask"])
            moved = transfer.to_device(batch, torch.device("cuda"))
            got = classifier_pooling.logits(model.cuda(), moved["input_ids"], moved["attention_mask"],
                                            moved.get("encoder_mask"))
            model.cpu()
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
