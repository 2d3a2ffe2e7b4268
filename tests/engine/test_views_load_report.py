"""The checkpoint load report never reads as "not loaded" for weights it loaded."""

from pgtrain.checkpoint import CheckpointReport

NAMES = [f"head.{i}.weight" for i in range(34)]


def test_a_resume_says_the_fresh_parameters_were_loaded_and_fresh_when_the_run_began():
    # A resume: the file provides every parameter; 34 of them were fresh when the run began.
    report = CheckpointReport(
        "out/model_0000020.pth", loaded=["backbone.weight", *NAMES], fresh=list(NAMES)
    )
    text = report.summary()
    assert "fresh parameters (34)" not in text
    assert text.splitlines()[0] == "Loaded 35 model tensors from out/model_0000020.pth"
    line = next(ln for ln in text.splitlines() if "34" in ln)
    assert line.startswith("  fresh when the run began (initialized, not from its initial")
    assert "all loaded from this file" in line


def test_initial_weights_say_which_parameters_start_from_their_initialization():
    report = CheckpointReport(
        "init.pth", loaded=["backbone.weight"], missing=["head.weight"], fresh=["head.weight"]
    )
    assert "  fresh: not in this file, start from their initialization (1): head.weight" in (
        report.summary()
    )


def test_the_iteration_of_a_checkpoint_is_said_as_the_console_counts():
    report = CheckpointReport("out/model_0000020.pth", loaded=["w"], extra={"iteration": 19})
    assert report.summary().splitlines()[-1] == "  extra: iterations done=20"
