"""The package's floors: a module imports only from its own floor or below, and the
modules of a floor import each other without a cycle."""
import ast
from collections import defaultdict

from tests.helpers import REPO

FLOORS = {'core': 1, 'data': 2, 'models': 3, 'science': 4, 'training': 5, 'use': 6, 'sweep': 6}
ENTRY = 7  # scalelab/<command>.py: the CLIs


def floor(module: str) -> int:
    parts = module.split('.')
    return FLOORS.get(parts[1], ENTRY) if len(parts) > 2 or parts[1] in FLOORS else ENTRY


def scalelab_imports() -> dict[str, set[str]]:
    """module -> the scalelab modules it imports (at any depth of its code)."""
    modules = {}
    for path in (REPO / 'scalelab').rglob('*.py'):
        rel = path.relative_to(REPO).with_suffix('')
        name = '.'.join(rel.parts[:-1] if rel.name == '__init__' else rel.parts)
        modules[name] = path
    imports = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('scalelab') and not node.level:
                for alias in node.names:
                    target = f'{node.module}.{alias.name}'
                    imports[name].add(target if target in modules else node.module)
    return {name: {t for t in imports[name] if t != name} for name in modules}


def test_no_module_imports_from_a_floor_above_its_own():
    upward = [(m, t) for m, targets in scalelab_imports().items() for t in targets
              if t != 'scalelab' and floor(t) > floor(m)]
    assert upward == []


def test_trained_models_and_sweeps_stand_apart():
    """use/ and sweep/ share a floor: neither imports the other."""
    crossing = [(m, t) for m, targets in scalelab_imports().items() for t in targets
                if {m.split('.')[1], t.split('.')[1]} == {'use', 'sweep'}]
    assert crossing == []


def test_no_import_cycle():
    graph = scalelab_imports()
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for target in graph.get(node, ()):
            assert state.get(target) != 'open', ' -> '.join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[node] = 'done'

    for module in graph:
        if module not in state:
            visit(module, [module])
