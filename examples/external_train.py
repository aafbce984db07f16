# One trial of an external study, run by `rootfree agent STUDY_ID -- python external_train.py`.
import torch

from service.client import current_trial
from workers import workloads

trial = current_trial()  # the claim in ROOTFREE_TRIAL; the service in ROOTFREE_URL, ROOTFREE_TOKEN
with trial:  # completes the trial on exit; an exception fails it with its last line
    workload = workloads.get(trial.workload)  # the shipped Fashion-MNIST (or your own model and data)
    run = workload.prepare(trial.budget, trial.seed, torch.device("cpu"))
    opt = trial.build_optimizer(run.model.parameters())  # optimizers.build(name, params, **hyperparameters)
    sched = workload.scheduler(opt, trial.budget["epochs"], constant=trial.schedule == "constant")
    for epoch in range(1, trial.budget["epochs"] + 1):
        for x, y in run.train_batches(epoch):
            loss = run.loss_fn(run.model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        metrics = {trial.metric: run.evaluate(run.model), "train_loss": loss.item()}
        if not trial.report(epoch, **metrics):
            break  # ASHA stopped it at its rung, or it diverged
