"""What a site does for a secure-aggregation stage: answer from ``context.state`` and the message, nothing more.

A distributed-DP secure round (the stage with the most work: masked input adds the site's noise share) of three
real sites over the loopback grid; once the train replies are in, the sites' data and feature cache are moved away,
so a stage that read the cohort would fail. Torch's profiler watches every stage delivery, and the study's noise
numbers are asked for at the masked-input stage only.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, Message
from loopback_grid import LoopbackGrid
from test_distributed_dp_rounds import DP_POLICY, distributed_study
from test_secure_rounds import node_configs
from torch.profiler import ProfilerActivity, profile

from fedfusion.coordinator.secure_stages import MESSAGE_TYPE
from fedfusion.coordinator.strategies.secure_fedavg import DistributedFedSGD, SecurePatientWeightedFedAvg
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy import distributed_noise
from fedfusion.secure_aggregation.wire_records import stage_of
from fedfusion.site.client_app import app


class WatchedStages(LoopbackGrid):
    """Moves ``away`` aside before the first stage; records the torch ops and noise look-ups of each stage."""

    def __init__(self, *args: object, away: list[Path], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.away = away
        self.torch_ops: dict[str, list[str]] = {}
        self.noise_lookups: dict[str, int] = {}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        if not messages or messages[0].metadata.message_type != MESSAGE_TYPE:
            return super().push_messages(messages)
        for folder in self.away:
            if folder.exists():
                folder.rename(folder.with_name(f"{folder.name}-moved-away"))
        stage = str(stage_of(messages[0].content))
        lookups = _noise_lookups()
        with profile(activities=[ProfilerActivity.CPU]) as watched:
            ids = super().push_messages(messages)
        self.noise_lookups[stage] = _noise_lookups() - lookups
        self.torch_ops[stage] = [event.name for event in watched.events()]
        return ids


def _noise_lookups() -> int:
    info = distributed_noise._once.cache_info()  # every call of distributed_noise goes through this cache
    return info.hits + info.misses


def test_stages_read_no_cohort_do_no_torch_work_and_look_up_the_noise_only_to_mask(
        small_cohort: Path, tmp_path: Path) -> None:
    study = distributed_study(small_cohort)
    configs = node_configs(small_cohort, tmp_path, "stages", 3, DP_POLICY)
    data = tmp_path / "data"
    shutil.copytree(small_cohort, data)
    for config in configs.values():  # each site reads its copy (the prepared features match by content)
        config["data-dir"] = str(data / Path(config["data-dir"]).name)
    grid = WatchedStages(app, configs, study.to_run_config(), away=[data, tmp_path / "cache"])
    strategy = SecurePatientWeightedFedAvg(min_sites=3, secure_aggregation=study.secure_aggregation,
                                           threshold_fraction=study.secure_aggregation_threshold,
                                           distributed=DistributedFedSGD.from_study(study))
    result = strategy.start(grid, ArrayRecord(build_model(study, seed=study.training_seed).state_dict()),
                            num_rounds=1, timeout=60)

    assert not data.exists() and (tmp_path / "data-moved-away").is_dir()  # moved before the stages
    assert result.train_metrics_clientapp[1]["secure-aggregation-sites"] == 3  # and every site answered them
    assert grid.torch_ops == {"share-keys": [], "masked-input": [], "unmask": []}
    assert grid.noise_lookups == {"share-keys": 0, "masked-input": 3, "unmask": 0}
