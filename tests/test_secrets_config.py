"""Secrets in configuration files, env lists and command lines, tried as a hostile user would:
every case is one instance of a class, tested with fresh values from a seeded generator (words,
mixed case, digits, the symbols passwords use, lengths 6-32), never only the example.

Each class test checks that every value is gone and that the redacted text is exactly the
text with each value replaced by the placeholder (so a value cut short, leaving a tail, fails).
"""

from __future__ import annotations

import configparser
import json
import random
import string

import pytest
import yaml

from codetune.data.secrets import redact, scan
from codetune.data.secrets.config import file_format

N = 50  # random values per form
# Ordinary words (none a placeholder such as "example" or "changeme", none used elsewhere in
# the texts below): `password: sunshine` is as much a password as a random string.
WORDS = ("sunshine", "dragon", "monkey", "football", "princess", "whatever", "trustno",
         "starwars", "pepper", "ginger", "tomato", "falcon", "harbour", "violet", "maple",
         "pumpkin", "lobster", "zeppelin", "octopus", "rainbow", "wizard", "biscuit", "orchid",
         "velvet", "hunter", "mustang", "cobalt", "walnut", "thunder", "marble")
# Symbols typical of passwords that are literal in every form tested (no `$`: `$X` and `${X}`
# are interpolation in .env, Compose and shells; no quotes, no blanks, no backslash).
SYMBOLS = "!@#%^&*-_+=.?~"
SHELL_SYMBOLS = "@#%^-_+=.,:~"  # what an unquoted shell word can hold literally


def _random_value(rng: random.Random, symbols: str = SYMBOLS, token: bool = False) -> str:
    """A password as people and generators write them. Under a token/key name a plain word is a
    setting (`secrets: inherit`), so `token=True` values always hold a digit."""
    r = rng.random()
    if r < 0.2 and not token:
        w = rng.choice(WORDS)
        return w.capitalize() if rng.random() < 0.5 else w
    if r < 0.4:
        w = rng.choice(WORDS)
        return (w.capitalize() + str(rng.randint(0, 9999))
                + (rng.choice(symbols) if rng.random() < 0.5 else ""))
    n = rng.randint(6, 32)
    pool = string.ascii_letters + string.digits + symbols
    while True:
        v = rng.choice(string.ascii_letters + string.digits) + "".join(
            rng.choice(pool) for _ in range(n - 1))
        # at least a lowercase letter and a digit, and no accidental `...` (a placeholder)
        if any(c.islower() for c in v) and any(c.isdigit() for c in v) and "..." not in v:
            return v


def values(seed: int, symbols: str = SYMBOLS, token: bool = False) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < N:
        v = _random_value(rng, symbols, token)
        if v not in out:
            out.append(v)
    return out


def _token_form(template: str) -> bool:
    """A form whose name says token/key/secret rather than password (see `_random_value`)."""
    return any(w in template.lower() for w in ("token", "secret", "api_key", "api-key"))


def assert_all_redacted(template: str, path: str | None, vals: list[str],
                        placeholder: str = "<SECRET>") -> None:
    """Each value in `template` ({v}) is found and replaced, and nothing else changes."""
    misses = []
    for v in vals:
        text = template.replace("{v}", v)
        got = redact(text, scan(text, path), placeholder)
        if got != template.replace("{v}", placeholder):
            misses.append((v, got))
    assert not misses, f"{len(misses)}/{len(vals)} missed in {path}: {misses[:3]}"


# -- which files are configuration ------------------------------------------------------------

@pytest.mark.parametrize("path, fmt", [
    ("config.yaml", "yaml"), ("deploy/k8s/deployment.yml", "yaml"),
    ("docker-compose.yml", "yaml"), ("docker-compose.override.yaml", "yaml"),
    ("setup.cfg", "ini"), ("tox.ini", "ini"), ("nginx/site.conf", "ini"), ("my.cnf", "ini"),
    ("pyproject.toml", "toml"), ("src/main/resources/application.properties", "properties"),
    (".env", "env"), ("app/.env.production", "env"), ("deploy/prod.env", "env"),
    ("config.yaml.example", "yaml"), (".env.sample", "env"), ("C:\\app\\settings.ini", "ini"),
    ("app.py", None), ("migrations/env.py", None), ("plux.ini", "ini"), ("README.md", None), ("Makefile", None), (None, None), ("", None),
    ("config/locales/de.yml", None),  # `password: Passwort` is a translation
])
def test_file_format(path, fmt):
    assert file_format(path) == fmt


# -- class 1: unquoted (and quoted) values after a secret-sounding key in configuration ------

CONFIG_FORMS = [
    ("config.yaml", "database:\n  host: db.internal\n  password: {v}\n  port: 5432\n"),
    ("config.yml", "password: {v}\n"),
    ("app.yaml", "db:\n  user: app\n  db_password: {v}  # rotated monthly\n"),
    ("app.yaml", "users:\n  - name: app\n    password: {v}\n"),
    ("app.yaml", '"password": {v}\n'),
    ("app.yaml", "api:\n  client_secret: {v}\n"),
    ("app.yaml", "db:\n  password: &dbpw {v}\n"),
    ("app.yaml", "db:\n  password:\n    {v}\n  port: 5432\n"),
    ("app.yaml", "db:\n  password: |\n    {v}\n  port: 5432\n"),
    ("app.yaml", 'password: "{v}"\n'),
    ("app.yaml", "password: '{v}'\n"),
    ("app.yaml", "# password: {v}\n"),
    ("docker-compose.yml", "services:\n  db:\n    image: postgres:16\n    environment:\n"
                           "      POSTGRES_PASSWORD: {v}\n"),
    ("docker-compose.yml", "services:\n  db:\n    environment:\n      - POSTGRES_PASSWORD={v}\n"),
    ("docker-compose.yml", 'services:\n  db:\n    environment:\n      - "MYSQL_PASSWORD={v}"\n'),
    ("k8s/secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n"
                        "  password: {v}\n"),
    ("settings.ini", "[database]\nhost = db.internal\npassword = {v}\n"),
    ("settings.ini", "[database]\npassword={v}\n"),
    ("settings.ini", "[database]\npassword: {v}\n"),
    ("setup.cfg", "[db]\nadmin_password = {v}\n"),
    ("my.cnf", "[client]\nuser=root\npassword={v}\n"),
    ("site.conf", "[auth]\nsecret_key = {v}\n"),
    ("pyproject.toml", "[tool.db]\npassword = {v}\n"),
    ("pyproject.toml", '[tool.db]\npassword = "{v}"\n'),
    ("config.toml", "[database]\nuser = 'app'\npassword = '{v}'\n"),
    ("application.properties", "db.password={v}\n"),
    ("application.properties", "spring.datasource.password = {v}\n"),
    ("application.properties", "db.password: {v}\n"),
    ("application.properties", "db.password {v}\n"),
    (".env", "DB_HOST=db.internal\nDB_PASSWORD={v}\n"),
    (".env", "export DB_PASSWORD={v}\n"),
    (".env.production", "db_password={v}\n"),
    (".env", 'DB_PASSWORD="{v}"\n'),
    ("deploy/prod.env", "SMTP_PASS={v}  # from the vault\n"),
]


@pytest.mark.parametrize("i, path, template", [(i, p, t) for i, (p, t) in
                                                enumerate(CONFIG_FORMS)])
def test_config_values_are_redacted_whatever_they_look_like(i, path, template):
    vals = values(100 + i, token=_token_form(template))
    _parses(path, template, vals)
    assert_all_redacted(template, path, vals)


def _parses(path: str, template: str, vals: list[str]) -> None:
    """The forms are real configuration: each document loads with the format's own parser."""
    fmt = file_format(path)
    for v in vals[:10]:
        text = template.replace("{v}", v)
        if fmt == "yaml":
            yaml.safe_load(text)
        elif fmt == "ini":
            configparser.ConfigParser(interpolation=None).read_string(text)


@pytest.mark.parametrize("path, template", [
    ("app.yaml", "github:\n  token: {v}\n"),
    ("app.yaml", "openai:\n  api_key: {v}\n"),
    ("settings.ini", "[api]\naccess_token = {v}\n"),
    (".env", "API_KEY={v}\n"),
    ("application.properties", "stripe.secret={v}\n"),
])
def test_config_token_values_are_redacted(path, template):
    assert_all_redacted(template, path, values(200, token=True))


def test_config_rules_need_the_path():
    """In code an unquoted name is a variable: the same lines in a .py file stay (as before)."""
    for text in ("password = hunter\n", "db_password = session_password\n",
                 "password: SecretStr\n"):
        assert scan(text, "app/settings.py") == []
        assert scan(text) == []
    assert scan("password: hunter\n", "config.yaml")  # ...and are values in configuration


# -- class 2: the name on one line, the value on the next (Kubernetes, Compose, ECS) ----------

PAIR_FORMS = [
    ("k8s/deployment.yaml", "    env:\n      - name: DB_PASSWORD\n        value: {v}\n"),
    ("k8s/deployment.yaml", '    env:\n      - name: DB_PASSWORD\n        value: "{v}"\n'),
    ("k8s/deployment.yaml", "    env:\n      - name: DB_PASSWORD\n        value: '{v}'\n"),
    ("k8s/deployment.yaml", "    env:\n    - name: API_TOKEN  # for the billing service\n"
                            "      value: {v}\n"),
    ("k8s/deployment.yaml", "    env:\n      - name: \"SECRET_KEY\"\n\n        value: {v}\n"),
    ("k8s/deployment.yaml", "    env:\n      - value: {v}\n        name: DB_PASSWORD\n"),
    ("k8s/deployment.yaml", "    env: [{name: DB_PASSWORD, value: {v}}]\n"),
    ("k8s/deployment.yaml", "    env:\n      - {name: DB_PASSWORD, value: \"{v}\"}\n"),
    ("k8s/deployment.yaml", "    env:\n      - name: DB_PASSWORD\n        value: >-\n"
                            "          {v}\n      - name: LOG_LEVEL\n        value: info\n"),
    ("chart/templates/job.yaml", "- name: REDIS_PASSWORD\n  value: {v}\n- name: A\n  value: b\n"),
    ("ecs/taskdef.json", '{"environment": [\n  {\n    "name": "DB_PASSWORD",\n'
                         '    "value": "{v}"\n  }\n]}\n'),
    ("ecs/taskdef.json", '{"environment": [{"name": "DB_PASSWORD", "value": "{v}"}]}\n'),
    (None, 'env = [{"name": "DB_PASSWORD", "value": "{v}"}]\n'),
    ("main.tf", 'env {\n  name  = "DB_PASSWORD"\n  value = "{v}"\n}\n'),
]


@pytest.mark.parametrize("i, path, template", [(i, p, t) for i, (p, t) in
                                                enumerate(PAIR_FORMS)])
def test_env_list_name_then_value_is_redacted(i, path, template):
    vals = values(300 + i, _pair_symbols(template), _token_form(template))
    if path and path.endswith(".yaml"):
        _parses(path, template, vals)
    assert_all_redacted(template, path, vals)


def _pair_symbols(template: str) -> str:
    """In a YAML flow mapping (`{name: X, value: v}`) a plain value cannot hold `#` after a
    blank or `?` (PyYAML); the generated values keep to what such documents can hold."""
    return SYMBOLS.replace("#", "").replace("?", "") if "{name" in template else SYMBOLS


# -- class 3: command lines -------------------------------------------------------------------

COMMAND_FORMS = [
    ("scripts/backup.sh", "#!/bin/sh\npsql --password={v} -h db -U app shop\n"),
    ("scripts/backup.sh", "mysql -u root -p{v} shop < dump.sql\n"),
    ("scripts/backup.sh", "mysqldump -uroot -p{v} --all-databases > all.sql\n"),
    ("scripts/backup.sh", "mariadb -h db -p{v}\n"),
    ("scripts/backup.sh", "mysql -h db \\\n  -u root \\\n  -p{v} \\\n  shop\n"),
    ("scripts/backup.sh", "mysql -uroot -p'{v}' shop\n"),
    ("scripts/deploy.sh", "./cli deploy --token {v} --env prod\n"),
    ("scripts/deploy.sh", "./cli deploy --token={v}\n"),
    ("scripts/deploy.sh", "curl-wrapper --api-key={v} https://api.example.com\n"),
    ("scripts/deploy.sh", "./cli --api-key {v}\n"),
    ("scripts/deploy.sh", "./cli login --username ops --password {v}\n"),
    ("scripts/deploy.sh", './cli login --password "{v}"\n'),
    ("scripts/deploy.sh", "docker login -u ops -p {v} registry.example.com\n"),
    ("scripts/deploy.sh", "sshpass -p {v} ssh ops@host uptime\n"),
    ("scripts/deploy.sh", "docker run -e DB_PASSWORD={v} -p 8080:80 app\n"),
    ("scripts/deploy.sh", "helm upgrade app ./chart --set db.password={v}\n"),
    ("Makefile", "deploy:\n\t./cli deploy --token {v} --env prod\n"),
    ("Makefile", "db:\n\tmysql -uroot -p{v} shop\n"),
    ("Dockerfile", "FROM alpine\nRUN ./cli login --password {v} && ./cli pull\n"),
    ("Dockerfile", "FROM alpine\nRUN mysql -h db -p{v} -e 'select 1'\n"),
    (".gitlab-ci.yml", "deploy:\n  script:\n    - ./cli deploy --token {v}\n"),
    (".github/workflows/ci.yml", "jobs:\n  db:\n    steps:\n      - run: mysql -uroot -p{v} -e "
                                 "'create database t'\n"),
    ("docker-compose.yml", "services:\n  app:\n    command: ./serve --api-key={v}\n"),
    ("docker-compose.yml", "services:\n  db:\n    healthcheck:\n      test: [\"CMD\", \"mysqladmin\", "
                           "\"ping\", \"-uroot\", \"-p{v}\"]\n"),
    ("README.md", "Run `./cli deploy --token={v}` once.\n"),
    ("tools/db.py", 'os.system("mysql -uroot -p{v} shop")\n'),
]


@pytest.mark.parametrize("i, path, template", [(i, p, t) for i, (p, t) in
                                                enumerate(COMMAND_FORMS)])
def test_command_line_credentials_are_redacted(i, path, template):
    token = _token_form(template)
    symbols = SYMBOLS.replace("'", "") if "'{v}'" in template or '"{v}"' in template \
        else SHELL_SYMBOLS
    if "`" in template:
        symbols = symbols.replace("`", "")
    assert_all_redacted(template, path, values(400 + i, symbols=symbols, token=token))


# -- left alone -------------------------------------------------------------------------------
# Decisions: templates, references, empty values and placeholders are not credentials; neither
# are names about a credential (`password_min_length: 8`, `token_expiry: 3600`: the name's
# last words say it is a length or a lifetime), a number or a plain word under a token/key
# name (`tokens: 4096`, `secrets: inherit`: counts and settings), labels (`password: Password`,
# several plain words), file paths and URLs (where a secret is kept, not the secret).

@pytest.mark.parametrize("path, text", [
    ("config.yaml", "password: ${DB_PASSWORD}\n"),
    ("config.yaml", "password: ${DB_PASSWORD:-}\n"),
    ("chart/templates/secret.yaml", "password: {{ .Values.password }}\n"),
    ("chart/templates/secret.yaml", "password: {{ .Values.db.password | b64enc | quote }}\n"),
    ("playbook.yml", "ansible_password: \"{{ vault_db_password }}\"\n"),
    ("playbook.yml", "db_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6638643965\n"),
    ("cfn.yaml", "MasterUserPassword: !Ref DbPassword\n"),
    ("config.yaml", "password: !ENV ${DB_PASSWORD}\n"),
    ("config.yaml", "password: *default_password\n"),
    ("k8s/deploy.yaml", "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n"
                        "        name: db\n        key: password\n"),
    ("k8s/deploy.yaml", "env:\n  - name: DB_PASSWORD\n    value: ${DB_PASSWORD}\n"),
    ("k8s/deploy.yaml", "env:\n  - name: DB_PASSWORD\n    value: \"\"\n"),
    ("k8s/deploy.yaml", "env:\n  - name: DB_HOST\n    value: db.internal\n"),
    ("k8s/deploy.yaml", "env:\n  - name: PASSWORD_MIN_LENGTH\n    value: \"12\"\n"),
    ("k8s/deploy.yaml", "env:\n  - name: DB_PASSWORD_FILE\n    value: /run/secrets/db\n"),
    ("config.yaml", "password:\n"),
    ("config.yaml", "password: ''\n"),
    ("config.yaml", "password: ~\n"),
    ("config.yaml", "password: null\n"),
    ("config.yaml", "password:\n  valueFrom:\n    secretKeyRef:\n      name: db\n"),
    ("config.yaml", "password:\n  - first\n  - second\n"),
    ("config.yaml", "password:\n  type: string\n  description: The user's password\n"),
    ("config.yaml", "password: changeme\n"),
    ("config.yaml", "password: CHANGE_ME\n"),
    ("config.yaml", "password: xxx\n"),
    ("config.yaml", "password: xxxxxxxx\n"),
    ("config.yaml", "password: '********'\n"),
    ("config.yaml", "password: <password>\n"),
    ("config.yaml", "password: your-password-here\n"),
    ("config.yaml", "password: Password\n"),
    ("config.yaml", "password: string\n"),
    ("config.yaml", "password_confirmation: Confirm your password\n"),
    ("config.yaml", "password_min_length: 8\n"),
    ("config.yaml", "password_reset_timeout: 3600\n"),
    ("config.yaml", "token_expiry: 3600\n"),
    ("config.yaml", "access_token_lifetime: 15m\n"),
    ("config.yaml", "max_tokens: 4096\n"),
    ("config.yaml", "tokens: 4096\n"),
    ("config.yaml", "secret_name: db-credentials\n"),
    ("config.yaml", "password_file: /run/secrets/db_password\n"),
    ("config.yaml", "password: /run/secrets/db_password\n"),
    ("config.yaml", "token_url: https://auth.example.com/oauth/token\n"),
    ("config.yaml", "require_password: true\n"),
    ("config.yaml", "secrets: inherit\n"),
    ("config.yaml", "api_key: required\n"),
    ("config.yaml", "password: [first, second]\n"),
    ("config.yaml", "password: {type: string}\n"),
    ("config.yaml", "password: DB_PASSWORD\n"),
    ("config/locales/de.yml", "de:\n  password: Passwort\n"),
    ("tox.ini", "[testenv]\npassenv = HOME\npass_env = CI\n"),
    ("plux.ini", "[localstack.aws.provider]\nsecretsmanager:default = localstack.services:x\n"),
    ("config.yaml", "permissions:\n  id-token: write\n"),
    ("pnpm-lock.yaml", "packages:\n  js-tokens: 4.0.0\n"),
    ("user.yml", "- user:\n    name: app\n    update_password: always\n"),
    ("assert.yml", "- that:\n  - args.default_pass == 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'\n"),
    ("test.yml", "vars:\n  - ansible_ssh_password_mechanism=ssh_askpass\n"),
    ("cloud.ini.template", "[vcenter]\nvcenter_password: @VMWARE_PASSWORD\n"),
    ("unit_tests.cfg", "[api_auth]\njwt_secret = {JWT_SECRET_KEY}\n"),
    ("settings.ini", "[db]\npassword = %(db_password)s\n"),
    ("application.properties", "db.password=${DB_PASSWORD}\n"),
    ("application.properties", "db.password=@db.password@\n"),
    (".env", "DB_PASSWORD=\n"),
    (".env", "DB_PASSWORD=${VAULT_DB_PASSWORD}\n"),
    (".env", "DB_PASSWORD=changeme\n"),
    (".env", "DB_PASSWORD=<your password>\n"),
    ("pyproject.toml", "[tool.x]\npassword = { env = \"DB_PASSWORD\" }\n"),
    ("docker-compose.yml", "services:\n  db:\n    environment:\n      - POSTGRES_PASSWORD\n"),
    ("docker-compose.yml", "services:\n  db:\n    environment:\n"
                           "      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD}\n"),
    ("docker-compose.yml", "secrets:\n  db_password:\n    file: ./db_password.txt\n"),
    (".github/workflows/ci.yml", "      with:\n        password: ${{ secrets.DOCKER_PASSWORD }}\n"
                                 "        token: ${{ github.token }}\n"),
])
def test_config_leaves_templates_references_and_placeholders_alone(path, text):
    found = scan(text, path)
    assert found == [], [text[f.start:f.end] for f in found]


@pytest.mark.parametrize("path, text", [
    ("run.sh", "mysql -u root -p shop\n"),  # a bare -p prompts; `shop` is the database
    ("run.sh", "mysql -u root -p\n"),
    ("run.sh", "docker run -p 8080:80 -p 3306:3306 mysql:8\n"),
    ("run.sh", "docker run -p8080:80 nginx\n"),
    ("run.sh", "mkdir -p build/out && cp -p a b\n"),
    ("run.sh", "ssh -p 2222 ops@host\n"),
    ("run.sh", "psql --password shop\n"),  # psql's --password is a switch: it prompts
    ("run.sh", "echo \"$PW\" | docker login -u ops --password-stdin registry.example.com\n"),
    ("run.sh", "./cli deploy --token $DEPLOY_TOKEN\n"),
    ("run.sh", "./cli deploy --token \"${DEPLOY_TOKEN}\"\n"),
    ("run.sh", "./cli deploy --token=$(cat /run/secrets/token)\n"),
    ("run.sh", "./cli --password=<password>\n"),
    ("run.sh", "./cli --api-key YOUR_API_KEY\n"),
    ("run.sh", "./cli --api-key API_KEY\n"),
    ("run.sh", "ansible-playbook --ask-pass --ask-vault-pass site.yml\n"),
    ("run.sh", "gh auth login --with-token < token.txt\n"),
    ("run.sh", "./cli --token-file /run/secrets/token --password-file pw.txt\n"),
    ("run.sh", "./cli --private-key ~/.ssh/id_ed25519\n"),
    ("run.sh", "./cli --password \\\n  --user ops\n"),
    ("run.sh", "docker run -e DB_PASSWORD -e DB_PASSWORD=$DB_PASSWORD app\n"),
    ("docker-compose.yml", "    healthcheck:\n      test: [\"CMD\", \"mysqladmin\", \"ping\", "
                           "\"-p$$MYSQL_ROOT_PASSWORD\"]\n"),
    ("Makefile", "deploy:\n\t./cli deploy --token $(DEPLOY_TOKEN)\n"),
    (".github/workflows/ci.yml", "      - run: ./cli deploy --token ${{ secrets.DEPLOY_TOKEN }}\n"),
    ("cli.py", 'parser.add_argument("--password", help="the password")\n'),
    ("README.md", "Pass --password followed by the password, or --token to use a token.\n"),
    ("README.md", "Use `--password PASSWORD` or `--token TOKEN`.\n"),
])
def test_commands_leave_ports_prompts_switches_and_templates_alone(path, text):
    found = scan(text, path)
    assert found == [], [text[f.start:f.end] for f in found]


def test_scan_without_path_still_finds_commands_and_pairs():
    """Callers that pass no path (notebooks' cells, old callers) keep the rules that need none."""
    v = "Zq8" + "xW3mK9"
    for text in (f"mysql -uroot -p{v} shop\n", f"./cli --api-key={v}\n",
                 '[{"name": "DB_PASSWORD", "value": "' + v + '"}]\n'):
        assert v not in redact(text, scan(text)), text


# -- every output of prepare and of `codetune index` ------------------------------------------

def _leaks(planted: list[str], text: str) -> list[str]:
    """The values of which `text` holds, in any case, the whole or any 8-character stretch (a
    partial leak is a leak). One pass over `text` with a set of the stretches."""
    low = text.lower()
    stretches = {v.lower()[i:i + 8]: v for v in planted for i in range(len(v) - 7)}
    found = {stretches[low[i:i + 8]] for i in range(len(low) - 7) if low[i:i + 8] in stretches}
    return sorted(found | {v for v in planted if len(v) < 8 and v.lower() in low})


def _planted_repo(root) -> tuple[dict[str, str], list[str]]:
    """One file per form, each holding N generated values; returns the expected redacted text
    of each file and every planted value."""
    expected: dict[str, str] = {}
    planted: list[str] = []
    forms = ([(p, t, _token_form(t), SYMBOLS) for p, t in CONFIG_FORMS if not t.startswith("#")]
             + [(p, t, _token_form(t), _pair_symbols(t)) for p, t in PAIR_FORMS if p]
             + [(p, t, _token_form(t),
                 SYMBOLS.replace("'", "") if "'{v}'" in t or '"{v}"' in t else SHELL_SYMBOLS)
                for p, t in COMMAND_FORMS])
    seen: dict[str, int] = {}
    for i, (path, template, token, symbols) in enumerate(forms):
        vals = values(1000 + i, symbols, token)
        planted += vals
        n = seen[path] = seen.get(path, 0) + 1
        rel = f"v{n}/{path}"  # the same form again goes to another folder, its name intact
        if path.startswith(".env"):  # prepare.languages can name extensions, not `.env`
            rel = f"v{n}/deploy/app.env"
        if path.endswith(".json"):  # one JSON document per file: the values as a list of them
            text = "[" + ",\n".join(template.replace("{v}", v) for v in vals) + "]\n"
            want = "[" + ",\n".join(template.replace("{v}", "<SECRET>") for _ in vals) + "]\n"
        else:
            # Repeating a form is not how files look, but each block is a complete instance
            # (a document, a section, a command), separated so that none reads into the next.
            sep = "\n---\n" if file_format(path) == "yaml" else "\n"
            blocks = [_numbered(template, k) for k in range(len(vals))]
            text = sep.join(b.replace("{v}", v) for b, v in zip(blocks, vals, strict=True))
            want = sep.join(b.replace("{v}", "<SECRET>") for b in blocks)
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        expected[rel] = want
    return expected, planted


def _numbered(template: str, k: int) -> str:
    """Make each block's section headers unique, so that ini files stay valid."""
    return template.replace("[database]", f"[database{k}]").replace("[db]", f"[db{k}]") \
        .replace("[client]", f"[client{k}]").replace("[auth]", f"[auth{k}]") \
        .replace("[tool.db]", f"[tool.db{k}]")


def _everything(folder) -> str:
    """Every file below `folder` as text, and the rows of every parquet file decoded."""
    import pyarrow.parquet as pq

    parts = []
    for p in folder.rglob("*"):
        if p.is_file():
            parts.append(p.read_bytes().decode("utf-8", "replace"))
            if p.suffix == ".parquet":
                parts += [json.dumps(r, default=str) for r in pq.read_table(p).to_pylist()]
    return "\n".join(parts)


LANGUAGES = {".properties": "Java Properties", ".env": "Dotenv", ".conf": "INI",
             ".cnf": "INI", ".tf": "HCL", ".md": "Markdown"}


def test_prepare_and_index_keep_no_planted_value_anywhere(tmp_path):
    import pyarrow.parquet as pq

    from codetune.context import index_dataset, index_tree
    from codetune.data import store
    from codetune.data.prepare import prepare

    from .conftest import prep_cfg

    expected, planted = _planted_repo(tmp_path / "repo")
    assert len(planted) >= N * (len(CONFIG_FORMS) + len(COMMAND_FORMS))
    cfg = prep_cfg(valid_fraction=0.0, languages=LANGUAGES, data_file_max_bytes=200_000,
                   dedup_near=False)
    out = tmp_path / "ds"
    summary = prepare([str(tmp_path / "repo")], out, cfg, progress=False,
                      context_index=index_dataset)
    assert summary.context and summary.context["files"] == len(expected)
    rows = {r["path"]: r for s in store.SPLITS for p in store.shard_paths(out, s)
            for r in pq.read_table(p).to_pylist()}
    assert set(rows) == set(expected)  # every file kept: the values went through the scanner
    for rel, want in expected.items():
        assert rows[rel]["content"] == want, rel
    assert list((out / "context").rglob("vocab*"))  # the BM25 vocabulary is among the outputs
    everything = _everything(out)
    assert "<secret>" in everything.lower()
    assert not _leaks(planted, everything)
    # `codetune index PATH` reads the working tree itself: it must redact the same way
    index = index_tree(tmp_path / "repo", tmp_path / "index", cfg=cfg, neighbours=True)
    assert len(index) > 0
    assert not _leaks(planted, _everything(tmp_path / "index"))
    # the check itself finds a value planted in the clear, whole or in part, in any case
    assert _leaks(planted[:3], "x" + planted[0].upper() + "y" + planted[1][1:-1] + planted[2])
