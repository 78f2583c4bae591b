"""The README's commands are the ones CI and users run."""
import re

from tests.helpers import REPO


def readme_commands():
    return re.findall(r'```bash\n(.*?)\n```', (REPO / 'README.md').read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1]
    assert 'pytest' in test_command
    assert test_command in (REPO / '.ci' / 'run').read_text()


def test_readme_run_command_uses_the_default_experiment():
    run_command = readme_commands()[0]
    assert 'python -m scalelab.run --config experiments/lm_stdlib.py --workdir runs/lm' in run_command
    assert (REPO / 'experiments' / 'lm_stdlib.py').exists()
