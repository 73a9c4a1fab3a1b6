"""The README says what the code does: its tables of settings match settings.py's defaults, every
numeric setting is documented, and it links to nothing outside the repository."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS = (ROOT / "project" / "settings.py").read_text()

# `NAME = _env_int("ENV", ...)` and `NAME = float(os.environ.get("ENV", ...))`
NUMERIC = re.compile(
    r'^(?P<setting>[A-Z_]+) = (?:_env_int\(|float\(os\.environ\.get\()"(?P<env>[A-Z_]+)"', re.M
)
NUMBER = re.compile(r"^\d[\d,_]*(?:\.\d+)?")


def numeric_settings() -> dict[str, str]:
    """Return {environment variable: setting name} for every numeric setting."""
    return {m["env"]: m["setting"] for m in NUMERIC.finditer(SETTINGS)}


def defaults(names: list[str]) -> dict[str, float]:
    """Return the settings' values with none of their variables set, read in a fresh process."""
    env_vars = numeric_settings()
    code = (
        "import json, os\n"
        f"for var in {list(env_vars)!r}: os.environ.pop(var, None)\n"
        "from project import settings\n"
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def documented() -> dict[str, str]:
    """Return {environment variable: its default} from every README table row naming some.

    A row may name several (`| `A`, `B` | `1`, `2` | ... |`): defaults pair up in order.
    """
    found = {}
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) < 2:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        values = [v.strip().strip("`") for v in cells[1].split(", ")] if len(names) > 1 else []
        values = values if len(values) == len(names) else [cells[1].strip("`")] * len(names)
        found.update(zip(names, values, strict=True))
    return found


def test_readme_limits_and_settings_tables_match_the_defaults():
    env_to_setting = numeric_settings()
    rows = {env: cell for env, cell in documented().items() if env in env_to_setting}
    assert "API_MAX_BODY_BYTES" in rows and "RUN_IDLE_TIMEOUT" in rows
    actual = defaults([env_to_setting[env] for env in rows])
    wrong = {}
    for env, cell in rows.items():
        number = NUMBER.match(cell)
        assert number, f"README's default for {env} does not start with a number: {cell!r}"
        stated = float(number.group().replace(",", "").replace("_", ""))
        if stated != float(actual[env_to_setting[env]]):
            wrong[env] = (cell, actual[env_to_setting[env]])
    assert not wrong, f"README defaults differ from settings.py (README, code): {wrong}"


def test_every_numeric_setting_is_in_a_readme_table():
    missing = sorted(set(numeric_settings()) - set(documented()))
    assert not missing, f"settings.py reads these variables; document them in README: {missing}"


def test_readme_links_stay_inside_the_repository():
    for target in re.findall(r"\]\(([^)]+)\)", README):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"README links outside the repository: {target}"
        assert path.exists(), f"README links to a missing file: {target}"
