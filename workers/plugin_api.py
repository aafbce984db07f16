"""The public plugin contract: bring your own model (a workload) and your own optimizer.

    from workers.plugin_api import Batch, OptimizerPlugin, Prepared, Workload

A package makes them known through Python entry points (its ``pyproject.toml``)::

    [project.entry-points."rootfree.workloads"]
    digits_mlp = "rootfree_examples.digits:WORKLOAD"        # a Workload (or a function returning one)

    [project.entry-points."rootfree.optimizers"]
    ifadagrad = "rootfree_examples.ifadagrad:PLUGIN"         # an OptimizerPlugin (or a function returning one)

The entry point's name must equal the plugin's ``name`` and must not be a built-in one. Every
process that needs them loads them on first use: the controller (``GET /workloads``,
``GET /optimizers``, study validation) and every trial process on a Ray worker. A plugin that fails
to import or breaks the contract is refused, logged and listed under ``errors`` of
``GET /workloads?include=errors`` / ``GET /optimizers?include=errors``; it never stops the service.

**Workload** (a frozen dataclass): ``name``, ``description``, ``metric`` (the name of what
``evaluate`` returns), ``mode`` (``"min"``/``"max"``), ``default_budget`` (integer budget keys; must
have ``epochs``; a study overrides any of them), ``schedule`` (``"step"``: x0.1 at 50% and 75% of the
epochs, or ``"cosine"``), ``prepare(budget, seed, device) -> Prepared``, ``limits`` (upper limits per
budget key, checked when a study is submitted), ``zero_ok`` (budget keys that may be 0).
Every workload also takes two budget keys the trial loop reads (``workers.workloads.LOOP_BUDGET``;
``prepare`` may ignore them): ``eval_every`` (evaluate every that many steps and at the end, each
evaluation a row with ``global_step``, the accumulated training time with evaluation excluded, the
accumulated evaluation time and the metric; left out: once per epoch) and ``max_runtime_s`` (stop
when the accumulated training time passes it). ``evaluate`` is then called mid-epoch; it may switch
the model to eval mode (the loop switches it back).

**Prepared** (what ``prepare`` returns for one trial): ``model`` (an ``nn.Module`` on ``device``),
``batch_size`` (B: the number of terms the loss averages over -- examples for a classifier, tokens
for a language model (batch x sequence length), labelled nodes for a full-graph GNN -- so that
``B * loss`` is the summed loss whose gradient outer product the root-free optimizers take as
their curvature (the paper, Sec. 3.1); the trial passes it to them as ``batch_size``),
``train_batches(epoch)`` (an iterator of ``(inputs, targets)``; seed the shuffle with ``seed`` and
``epoch`` so a trial is reproducible), ``evaluate(model) -> float`` (the metric on held-out data),
``loss_fn(model(inputs), targets) -> scalar tensor``, ``examples_per_batch`` (for throughput).

**OptimizerPlugin**: see its docstring (``name``, ``factory(params, **hyperparameters)``,
``hyperparameters``, ``default_space`` in the search-space language, ``root_free``, ``zero_init``).
"""

from optimizers.registry import OptimizerPlugin

from .prepared import Batch, Prepared
from .workloads import Workload

__all__ = ["Batch", "OptimizerPlugin", "Prepared", "Workload"]
