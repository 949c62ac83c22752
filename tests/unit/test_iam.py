"""The runner policy: shipped in sync with the code, least privilege, PassRole scoped to Lambda."""

from __future__ import annotations

import json
import subprocess
import sys

from deploy import iam


def test_the_shipped_runner_policy_is_the_generated_one() -> None:
    shipped = json.loads(iam.RUNNER_POLICY_FILE.read_text())
    assert shipped == iam.runner_policy_template(), (
        "regenerate it: python -m deploy.iam runner-policy-template"
    )


def test_the_runner_policy_grants_exact_actions_on_this_pipelines_resources() -> None:
    policy = iam.runner_policy_template()
    actions = iam.runner_actions(policy)
    assert len(actions) == 93  # 07's cost section reads the query history and, on AWS, the Price List
    assert not [a for a in actions if a.endswith("*")]
    wildcard = {a for st in policy["Statement"] if st["Resource"] == ["*"] for a in st["Action"]}
    assert wildcard == {
        "sts:GetCallerIdentity", "pricing:GetProducts", "lambda:CreateEventSourceMapping",
        "lambda:DeleteEventSourceMapping", "lambda:GetEventSourceMapping", "lambda:ListEventSourceMappings",
        "lambda:UpdateEventSourceMapping",
    }  # fmt: skip
    [passrole] = [st for st in policy["Statement"] if st["Action"] == ["iam:PassRole"]]
    assert passrole["Resource"] == [
        "arn:aws:iam::ACCOUNT_ID:role/stock-trend-processor-role",
        "arn:aws:iam::ACCOUNT_ID:role/stock-trend-trend-role",
    ]
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    resources = {r for st in policy["Statement"] for r in st["Resource"]} - {"*"}
    assert all("stock-trend" in r or "stock_trend" in r or r.endswith(":catalog") for r in resources)


def test_api_calls_map_to_their_iam_actions() -> None:
    assert iam.iam_action("s3:ListObjectsV2") == "s3:ListBucket"
    assert iam.iam_action("s3:HeadObject") == "s3:GetObject"
    assert iam.iam_action("kinesis:PutRecords") == "kinesis:PutRecords"


def test_the_cli_prints_the_policy_for_the_resolved_settings(project_root) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(project_root), "HOME": "/nonexistent"}
    env.update(STP_TARGET="aws", STP_ACCOUNT_ID="210987654321", STP_REGION="eu-west-1")
    run = subprocess.run(
        [sys.executable, "-m", "deploy.iam", "runner-policy"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    policy = json.loads(run.stdout)
    text = json.dumps(policy)
    assert "arn:aws:kinesis:eu-west-1:210987654321:stream/stock-trend-quotes" in text
    assert "stock-trend-raw-210987654321-eu-west-1" in text and "ACCOUNT_ID" not in text


def test_the_readme_shows_the_runner_policy_as_generated(project_root) -> None:
    readme = (project_root / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- runner-policy -->\n", 1)[1].split("<!-- /runner-policy -->", 1)[0]
    assert shown == iam.runner_policy_markdown(), "paste: python -m deploy.iam runner-policy-markdown"
    assert shown.count("\n") == len(iam.runner_policy_template()["Statement"]) + 2
