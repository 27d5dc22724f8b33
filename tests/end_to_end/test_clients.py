"""Generated clients, as a frontend developer makes them from /openapi.json: openapi-typescript
(default options) output compiled under `tsc --strict` with a typed journey, and
openapi-python-client output imported and walked through the journey against a live
server. Node and the npm packages (pinned in tests/clients/package-lock.json) come from the
npm registry; outside CI, a machine without npm skips the TypeScript check, saying why."""

import datetime as dt
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ON_POSTGRES, PASSWORD, ROOT, fresh_database_url, new_email, uvicorn_server

CLIENTS_DIR = ROOT / "tests" / "clients"


@pytest.fixture(scope="module")
def document_file(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("document") / "openapi.json"
    path.write_text(json.dumps(client.get("/openapi.json").json()))
    return path


@pytest.fixture(scope="module")
def npm_packages():
    """tests/clients/node_modules, installed as the lock file pins them."""
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is required in CI for the generated TypeScript client check")
        pytest.skip("npm is not installed: the TypeScript client check needs Node.js and npm")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CLIENTS_DIR,
        check=True,
        timeout=300,
    )
    return CLIENTS_DIR / "node_modules"


def test_openapi_typescript_output_compiles_under_strict_with_the_whole_journey(
    document_file, npm_packages, tmp_path
):
    for name in ("journey.ts", "tsconfig.json"):
        shutil.copy(CLIENTS_DIR / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(npm_packages)
    subprocess.run(
        [npm_packages / ".bin" / "openapi-typescript", document_file, "-o", "schema.d.ts"],
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    compiled = subprocess.run(
        [npm_packages / ".bin" / "tsc", "-p", "tsconfig.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr


@pytest.fixture
def python_client(document_file, tmp_path):
    """The package openapi-python-client generates, importable."""
    config = tmp_path / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the output as generated
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(document_file),
            "--output-path",
            str(tmp_path / "client"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout, generated.stdout
    sys.path.insert(0, str(tmp_path / "client"))
    try:
        yield lambda name: importlib.import_module(f"plan_her_client.{name}")
    finally:
        sys.path.remove(str(tmp_path / "client"))
        for module in [name for name in sys.modules if name.startswith("plan_her_client")]:
            del sys.modules[module]


def test_openapi_python_client_output_imports_and_walks_the_journey(python_client, tmp_path):
    models, api = python_client("models"), python_client("client")
    auth = {
        name: python_client(f"api.auth.{name}")
        for name in (
            "post_auth_register",
            "post_auth_login",
            "post_auth_refresh",
            "post_auth_logout",
        )
    }
    email = new_email()
    with (
        fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", tmp_path) as url,
        uvicorn_server(url, tmp_path / "server.log") as (base, _),
    ):
        public = api.Client(base_url=base, raise_on_unexpected_status=True)
        with public:
            user = auth["post_auth_register"].sync(
                client=public, body=models.RegisterBody(email=email, password=PASSWORD)
            )
            tokens = auth["post_auth_login"].sync(
                client=public, body=models.LoginBody(email=email, password=PASSWORD)
            )
        assert isinstance(user, models.UserOut) and user.role == models.Role.USER
        assert isinstance(tokens, models.TokenPairOut)
        her = api.AuthenticatedClient(
            base_url=base, token=tokens.access_token, raise_on_unexpected_status=True
        )
        with her:
            walk_her_data(python_client, models, her)
        public = api.Client(base_url=base, raise_on_unexpected_status=True)
        with public:
            fresh = auth["post_auth_refresh"].sync(
                client=public, body=models.RefreshBody(refresh_token=tokens.refresh_token)
            )
            assert isinstance(fresh, models.TokenPairOut)
            ended = auth["post_auth_logout"].sync_detailed(
                client=public, body=models.LogoutBody(refresh_token=fresh.refresh_token)
            )
        assert ended.status_code == 204


def walk_her_data(python_client, models, her) -> None:
    profile = python_client("api.profiles.post_profiles_me").sync(
        client=her, body=models.ProfileBody(height_cm=165, weight_kg=60)
    )
    assert isinstance(profile, models.ProfileOut) and profile.bmi == 22.0
    period = python_client("api.periods.post_periods").sync(
        client=her,
        body=models.PeriodBody(start_date=dt.date.today() - dt.timedelta(days=10)),
    )
    assert isinstance(period, models.PeriodOut)
    mood = python_client("api.moods.post_moods").sync(
        client=her, body=models.MoodBody(energy_level=models.EnergyLevel.VALUE_2)
    )
    assert isinstance(mood, models.MoodOut) and mood.energy_label == models.EnergyLabel.HIGH
    current = python_client("api.predictions.get_predictions_current").sync(client=her)
    assert isinstance(current, models.PredictionOut)
    assert isinstance(current.energy.level, models.EnergyLevel)
    forecast = python_client("api.predictions.get_predictions_forecast").sync(client=her, days=7)
    assert len(forecast) == 7 and all(isinstance(d, models.PredictionOut) for d in forecast)
