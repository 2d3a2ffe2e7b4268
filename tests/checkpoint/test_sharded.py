"""Sharded checkpoints in one process: the same dict as a single file, atomic under a kill at any
stage of the save, safe to read (no code runs), pruned and converted like single files. The
multi-process side (FSDP shards, 2 -> 1 and 1 -> 2) is tests/engine/test_fsdp.py."""

import multiprocessing
import os
import pickle
import signal

import pytest
import torch
import torch.distributed.checkpoint as dcp

from pgtrain.checkpoint import Checkpointer
from pgtrain.checkpoint import sharded as sharded_module
from pgtrain.checkpoint.sharded import read_sharded, save_sharded, split_tensors
from pgtrain.engine import check_output_dir
from pgtrain.errors import CheckpointError, ConfigError
from tools import convert_checkpoint


class Counter:
    """A checkpointable with tensors in a list and plain values."""

    def __init__(self):
        self.state = {"count": 3, "history": [torch.arange(3), 1.5], "name": "c"}

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


def saved(tmp_path, make_net, name="model_0000000", **kwargs):
    model = make_net(0)
    checkpointer = Checkpointer(model, str(tmp_path), sharded=True, **kwargs)
    checkpointer.register("counter", Counter())
    return model, checkpointer, checkpointer.save(name, iteration=0)


def test_a_sharded_checkpoint_holds_what_a_file_holds(tmp_path, make_net):
    model, checkpointer, path = saved(tmp_path / "dcp", make_net)
    assert path.endswith("model_0000000.dcp") and os.path.isdir(path)
    assert (tmp_path / "dcp" / "last_checkpoint").read_text() == "model_0000000.dcp"
    file_path = Checkpointer(model, str(tmp_path / "file"), counter=Counter()).save(
        "model_0000000", iteration=0
    )
    as_file = torch.load(file_path, weights_only=True)
    as_folder = read_sharded(path)
    assert sorted(as_folder) == sorted(as_file) == ["counter", "fresh", "iteration", "model", "rng"]
    assert as_folder["counter"]["history"][1] == 1.5 and as_folder["rng"]["python"][0] == 3
    _, file_tensors = split_tensors(as_file)
    skeleton, folder_tensors = split_tensors(as_folder)
    assert sorted(folder_tensors) == sorted(file_tensors)
    for key, value in file_tensors.items():
        assert torch.equal(folder_tensors[key], value), key
    # Resuming loads it into a new model and the checkpointable, as a file would.
    other = make_net(1)
    resumed = Checkpointer(other, str(tmp_path / "dcp"), sharded=True)
    counter = Counter()
    counter.state = {}
    resumed.register("counter", counter)
    report = resumed.resume_or_load("", resume=True)
    assert report.resumed and report.extra["iteration"] == 0
    assert counter.state["count"] == 3 and torch.equal(counter.state["history"][0], torch.arange(3))
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


@pytest.mark.parametrize("stage", ["shards", "state file", "rename"])
def test_a_kill_during_a_sharded_save_leaves_the_previous_checkpoint(tmp_path, make_net, stage):
    _, _, first = saved(tmp_path, make_net)

    def killed_save():
        # The second save dies (SIGKILL: no cleanup runs) at `stage`.
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        if stage == "shards":
            original = dcp.FileSystemWriter.write_data

            def write_then_die(self, plan, planner):
                original(self, plan, planner).wait()  # the shard files are there, not .metadata
                die()

            dcp.FileSystemWriter.write_data = write_then_die
        elif stage == "state file":
            sharded_module.torch.save = die
        else:
            original_replace = sharded_module._replace_folder

            def rename_then_die(temp, path):
                original_replace(temp, path)  # the new folder is complete; the pointer not moved
                die()

            sharded_module._replace_folder = rename_then_die
        model = make_net(5)
        Checkpointer(model, str(tmp_path), sharded=True).save("model_0000001", iteration=1)
        os._exit(0)  # not reached

    _run_until_killed(killed_save)
    checkpointer = Checkpointer(make_net(7), str(tmp_path), sharded=True)
    assert checkpointer.get_checkpoint_file() == first
    report = checkpointer.resume_or_load("", resume=True)
    assert report.extra["iteration"] == 0
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(temps) == (0 if stage == "rename" else 1)
    # The next run's first save removes what the killed save left.
    checkpointer.save("model_0000002", iteration=2)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def _run_until_killed(save) -> None:
    """Runs `save` in a forked process, which must end by SIGKILL (a kill mid-save)."""
    child = multiprocessing.get_context("fork").Process(target=save)
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["moved aside", "renamed in"])
def test_a_kill_while_replacing_a_folder_of_the_same_name_loses_neither_copy(
    tmp_path, make_net, stage
):
    """Re-saving model_final.dcp (a resumed run that ends where the last one did) moves the old
    folder aside before renaming the new one in. Observed: a kill between the two renames left
    last_checkpoint naming a folder that no longer existed (resume failed), and the only copy
    under a temporary name that the next save deleted as a leftover."""
    model = make_net(0)
    first = Checkpointer(model, str(tmp_path), sharded=True).save("model_final", iteration=9)

    def killed_save():
        original = sharded_module.os.rename
        renames = []

        def rename_then_die(src, dst):
            renames.append(src)
            if stage == "moved aside" and src == first:
                original(src, dst)  # the old folder is aside, the new one not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
            original(src, dst)
            if stage == "renamed in" and dst == first:  # the aside copy not yet deleted
                os.kill(os.getpid(), signal.SIGKILL)

        sharded_module.os.rename = rename_then_die
        Checkpointer(make_net(5), str(tmp_path), sharded=True).save("model_final", iteration=19)
        os._exit(0)  # not reached

    _run_until_killed(killed_save)
    resumed = Checkpointer(make_net(7), str(tmp_path), sharded=True)
    assert resumed.get_checkpoint_file() == first
    report = resumed.resume_or_load("", resume=True)
    # The pointer's save was not complete when the kill came, or it was: either way a whole one.
    assert report.extra["iteration"] == (9 if stage == "moved aside" else 19)
    resumed.save("model_0000010", iteration=10)  # the next run's first save cleans up ...
    hidden = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert len(hidden) == (1 if stage == "moved aside" else 0)  # the old copy, still needed
    again = Checkpointer(make_net(7), str(tmp_path), sharded=True)
    assert again.load(first).extra["iteration"] == report.extra["iteration"]  # ... not this
    again.save("model_final", iteration=20)
    assert read_sharded(first)["iteration"] == 20
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.dcp"
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000010.dcp",
        "model_final.dcp",
    ]


def test_keep_last_prunes_sharded_folders(tmp_path, make_net):
    model = make_net(0)
    checkpointer = Checkpointer(model, str(tmp_path), sharded=True, keep_last=2)
    for i in range(4):
        checkpointer.save(f"model_{i:07d}", iteration=i)
    checkpointer.save("model_final", iteration=4)
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".dcp")) == [
        "model_0000002.dcp",
        "model_0000003.dcp",
        "model_final.dcp",
    ]
    checkpointer.save("model_final", iteration=5)  # a second final replaces the first
    assert read_sharded(str(tmp_path / "model_final.dcp"))["iteration"] == 5
    with pytest.raises(ConfigError, match="already holds a run"):
        check_output_dir(str(tmp_path), resume=False)


def test_reading_refuses_pickled_objects_and_foreign_metadata(tmp_path):
    # A DCP entry that is not a tensor is pickled bytes, which torch would unpickle freely.
    folder = tmp_path / "bytes.dcp"
    dcp.save({"obj": "text"}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"model": {"__pgtrain_tensor__": "obj"}}, folder / "state.pth")
    with pytest.raises(CheckpointError, match="'obj' is a pickled object, not a tensor"):
        read_sharded(str(folder))
    # Metadata that would build something other than DCP's records.
    folder = tmp_path / "evil.dcp"
    save_sharded({"model": {"w": torch.ones(2)}}, str(folder), writer=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (folder / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match=r"unreadable metadata \(UnpicklingError: refused"):
        read_sharded(str(folder))


def test_reading_names_what_is_missing_or_damaged(tmp_path):
    folder = tmp_path / "model.dcp"
    save_sharded({"model": {"w": torch.ones(1000)}}, str(folder), writer=True)
    (folder / "state.pth").unlink()
    with pytest.raises(CheckpointError, match="not a complete pgtrain sharded checkpoint"):
        read_sharded(str(folder))
    save_sharded({"model": {"w": torch.ones(1000)}}, str(folder), writer=True)
    shard = folder / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="could not be read .* it is damaged"):
        read_sharded(str(folder))
    with pytest.raises(CheckpointError, match="does not exist"):
        read_sharded(str(tmp_path / "nothing.dcp"))


def test_convert_checkpoint_writes_one_loadable_file(tmp_path, make_net, capsys):
    model, _, path = saved(tmp_path, make_net)
    target = tmp_path / "model.pth"
    convert_checkpoint.main([path, str(target)])
    assert "Wrote" in capsys.readouterr().out
    whole = torch.load(target, weights_only=True)
    assert whole["counter"]["count"] == 3 and whole["iteration"] == 0
    convert_checkpoint.main([path, str(tmp_path / "weights.pth"), "--weights-only"])
    weights = torch.load(tmp_path / "weights.pth", weights_only=True)
    assert list(weights) == ["model"]
    other = make_net(3)
    Checkpointer(other).load(str(tmp_path / "weights.pth"))
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    with pytest.raises(SystemExit) as exit_info:
        convert_checkpoint.main([str(target), str(tmp_path / "again.pth")])
    assert exit_info.value.code == 2
    assert "is not a sharded checkpoint" in capsys.readouterr().err
