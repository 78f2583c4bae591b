"""The docs build strictly, every relative link resolves, and the README stays an entry."""
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

MARKDOWN = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md')),
            *sorted((REPO / 'benchmarks' / 'results').glob('*/README.md'))]
LINK = re.compile(r'\]\(([^)\s]+)\)')


def test_the_docs_site_builds_with_strict(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(tmp_path / 'site')],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    built = {p.relative_to(tmp_path / 'site').parent.as_posix() for p in (tmp_path / 'site').rglob('index.html')}
    assert {'.', 'scaling-laws', 'reliability', 'experiments'} <= built


@pytest.mark.parametrize('page', MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if target.startswith(('http://', 'https://', 'mailto:', '#')):
            continue
        path = (page.parent / target.split('#')[0]).resolve()
        assert path.exists(), f'{page.relative_to(REPO)}: {target} does not exist'


def test_paths_the_docs_name_exist():
    """Code spans that name a file of the repository (`benchmarks/results/.../README.md`,
    `experiments/...py`, `scalelab/...py`) name one that exists."""
    named = re.compile(r'`((?:benchmarks|experiments|scalelab|docs|launch|tests)/[\w./-]+\.(?:md|py|csv|json|png|sh))`')
    for page in MARKDOWN:
        for path in named.findall(page.read_text()):
            assert (REPO / path).exists(), f'{page.relative_to(REPO)} names {path}, which does not exist'


def test_the_readme_is_an_entry_not_the_manual():
    lines = (REPO / 'README.md').read_text().splitlines()
    assert len(lines) <= 250
    assert 'docs/' in (REPO / 'README.md').read_text()
