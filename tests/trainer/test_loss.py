"""ClipLoss alone, then for real with two gloo processes against the single-process reference."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipdata.trainer import distributed, model
from clipdata.trainer.loss import ClipLoss

WORLD_SIZE = 2
GLOBAL_BATCH = 8
# a small CLIP so that two processes build and run it in well under a second
SMALL = {"embed_dim": 32,
         "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
         "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 64, "heads": 2, "layers": 1}}


def global_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g, dtype=torch.float64)
    tokens = torch.randint(1, 99, (GLOBAL_BATCH, 16), generator=g)
    tokens[:, -1] = 99  # the eot id
    return images, tokens


def small_model():
    torch.manual_seed(0)
    return model.build_model(SMALL).double()


def reference_loss(image_features, text_features, scale):
    logits = scale * image_features @ text_features.T
    n = len(logits)
    image_to_text = -torch.stack([logits[i].log_softmax(0)[i] for i in range(n)]).mean()
    text_to_image = -torch.stack([logits[:, j].log_softmax(0)[j] for j in range(n)]).mean()
    return (image_to_text + text_to_image) / 2


def test_single_process_loss_is_the_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(1)
    image_features = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    text_features = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    scale = torch.tensor(1 / 0.07)
    loss = ClipLoss()(image_features, text_features, scale)
    torch.testing.assert_close(loss, reference_loss(image_features, text_features, scale))
    # matched pairs at the maximum temperature: the loss vanishes
    assert ClipLoss()(image_features, image_features, torch.tensor(100.0)) < 0.1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    is_distributed, rank_, _, world_size, device = distributed.init_distributed(backend="gloo")
    assert (is_distributed, rank_, world_size, device.type) == (True, rank, WORLD_SIZE, "cpu")
    assert distributed.is_master() == (rank == 0)
    images, tokens = global_batch()
    n = GLOBAL_BATCH // WORLD_SIZE
    local = slice(rank * n, (rank + 1) * n)
    results = {}
    for local_loss in (True, False):
        for gather_with_grad in (True, False):
            loss_fn = ClipLoss(rank, WORLD_SIZE, local_loss=local_loss, gather_with_grad=gather_with_grad)
            # the model, wrapped in DDP exactly as the trainer does: gradients averaged over ranks
            ddp = torch.nn.parallel.DistributedDataParallel(small_model())
            image_features, text_features, scale = ddp(images[local], tokens[local])
            image_features.retain_grad()
            text_features.retain_grad()
            loss = loss_fn(image_features, text_features, scale)
            loss.backward()
            results[local_loss, gather_with_grad] = {
                "loss": loss.detach(),
                "image_grad": image_features.grad, "text_grad": text_features.grad,
                "params": {name: p.grad for name, p in ddp.module.named_parameters()},
            }
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("ranks"))
    mp.spawn(worker, args=(free_port(), out_dir), nprocs=WORLD_SIZE, join=True)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single():
    clip = small_model()
    image_features, text_features, scale = clip(*global_batch())
    image_features.retain_grad()
    text_features.retain_grad()
    loss = ClipLoss()(image_features, text_features, scale)
    loss.backward()
    return {"loss": loss.detach(), "image_grad": image_features.grad, "text_grad": text_features.grad,
            "params": {name: p.grad for name, p in clip.named_parameters()}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("local_loss", [True, False])
def test_two_ranks_give_the_single_process_loss_and_gradients(two_ranks, single, local_loss):
    ranks = [r[local_loss, True] for r in two_ranks]
    # the mean of the ranks' losses is the loss on the global batch
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD_SIZE, single["loss"])
    # each rank's feature gradient is the sum over ranks' losses = world_size x the global mean's
    for which in ("image_grad", "text_grad"):
        distributed_grad = torch.cat([r[which] for r in ranks]) / WORLD_SIZE
        torch.testing.assert_close(distributed_grad, single[which])
    # after DDP's average every rank holds the single-process parameter gradients
    for r in ranks:
        assert r["params"].keys() == single["params"].keys()
        for name, grad in single["params"].items():
            torch.testing.assert_close(r["params"][name], grad, msg=name)


@pytest.mark.timeout(120)
def test_gather_without_grad_gives_the_same_loss_not_the_same_gradients(two_ranks, single):
    ranks = [r[True, False] for r in two_ranks]
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD_SIZE, single["loss"])
    grad = single["params"]["visual.proj"]
    assert not torch.allclose(ranks[0]["params"]["visual.proj"], grad)
