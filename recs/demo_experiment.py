"""Step 8 of ``make demo``: an A/B experiment of two models on the shown language.

``recs experiment start`` (arm ``a``: ALS, the default; arm ``b``: EASE), ``recs train
--evaluate`` publishing both, ``recs impressions`` joining the running ``recs consume`` and
``recs update``, then simulated learners (recs/experiment_sim.py) reading their lists with
their arm and model version, publishing impressions and clicking arm b's lists a planted 30 %
more; once Redis counts exactly what was sent, ``recs experiment report``.
"""

from __future__ import annotations

from recs.demo_run import FILTER_FLAGS, KAFKA_FLAGS, SHOWN, DemoRun
from recs.experiment_sim import Simulation, wait_counted

IMPRESSIONS_TOPIC = "resource-impressions"
ROUNDS = (2000, 2000, 2000)
LIFT = 0.3


def experiment_step(demo: DemoRun) -> None:
    say = demo.say
    out = demo.recs("experiment", "start", "--lang", SHOWN, "--arms", "a=als:1,b=ease:1",
                    "--id", "demo")
    say(out.strip())
    out = demo.recs("train", "--lang", SHOWN, "--evaluate", "--model-dir",
                    str(demo.out / "models"), *FILTER_FLAGS)
    say(out.strip().splitlines()[-1])
    impressions = demo.start("impressions", *KAFKA_FLAGS)
    users = [m.decode() for m in demo.redis.smembers(demo.keys.published_users(SHOWN))]
    sim = Simulation(demo.redis, demo.stack.broker.bootstrap, SHOWN, users, planted="b",
                     lift=LIFT, seed=demo.s.seed)
    say(f"simulated learners read their lists (with arm and model version, one MULTI) and "
        f"click arm b's {LIFT:.0%} more; impressions -> {IMPRESSIONS_TOPIC}, clicks -> views")

    def alive() -> None:
        for proc in demo.processes:
            proc.check_alive()

    for n in ROUNDS:
        sim.round(n)
        waited = wait_counted(demo.redis, demo.keys, SHOWN, "demo", sim.sent, demo.s.timeout,
                              alive)
        say(f"{sim.sent.impressions:,} impressions and {sim.sent.clicks:,} clicks sent, all "
            f"counted exactly once ({waited:.1f} s after the last send)")
    impressions.check_alive()
    say("recs experiment report --lang " + SHOWN)
    say(demo.recs("experiment", "report", "--lang", SHOWN).rstrip())
