import importlib.util

import pytest


def require_examples() -> None:
    """The example plugin package must be installed (`make install` / scripts/install.sh does
    `pip install -e examples/plugins/rootfree-examples`): a missing install fails, never skips."""
    if importlib.util.find_spec("rootfree_examples") is None:
        pytest.fail("the example plugins are not installed: pip install -e examples/plugins/rootfree-examples",
                    pytrace=False)
