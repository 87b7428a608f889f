"""Translates template.yaml (AWS SAM) into the plain CloudFormation JSON that CloudFormation's
AWS::Serverless transform deploys, offline and without credentials, so that checkov scans the
resources that really get created (the Lambda function, its event source mappings, the schedule
rule) rather than the SAM shorthand.

It prepares the template as `sam validate` does before translating: the local CodeUri becomes a
placeholder S3 URI (the translator accepts only S3 locations), and the translator runs with a
fixed region and no credentials. Managed
policy names would resolve from the map bundled with aws-sam-translator (the template names
none), so nothing is asked of IAM or any other AWS endpoint.

Checkov reads its skips from each resource's `Metadata: checkov: skip:`. The translator keeps a
SAM resource's Metadata on the resource that takes over its logical id (the
AWS::Lambda::Function of an AWS::Serverless::Function); with `passthrough_metadata` it also copies
it onto every other resource made from it (event source mappings, schedule rule, permission,
invoke config), so a skip written on the SAM resource reaches whichever of them a check flags.

Usage: python sam_translate.py TEMPLATE_YAML OUTPUT_JSON
Runs in the project virtualenv, where aws-sam-cli brings aws-sam-translator.
"""

import json
import sys

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

# Any region will do: only ARNs of the region's partition depend on it, and the checks do not.
REGION = "us-east-1"
# What `sam validate` puts in place of a local path.
PLACEHOLDER_CODE_URI = "s3://bucket/value"
# Properties that hold a local path on each SAM resource type.
LOCAL_PATH_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


def with_placeholder_code(template: dict) -> dict:
    """Replaces local code paths with the placeholder S3 URI, as `sam validate` does."""
    for resource in template.get("Resources", {}).values():
        key = LOCAL_PATH_PROPERTIES.get(resource.get("Type"))
        properties = resource.get("Properties", {})
        value = properties.get(key) if key else None
        if isinstance(value, str) and not value.startswith("s3://"):
            properties[key] = PLACEHOLDER_CODE_URI
    return template


def translate(template: dict) -> dict:
    """The CloudFormation template the AWS::Serverless transform makes of `template`."""
    translator = Translator(
        managed_policy_map=None,
        sam_parser=Parser(),
        plugins=[],
        # A region and no credentials: the translator reads the region for pseudo parameters
        # and never calls out.
        boto_session=boto3.session.Session(region_name=REGION),
    )
    return translator.translate(
        sam_template=with_placeholder_code(template),
        parameter_values={},
        passthrough_metadata=True,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, destination = argv[1], argv[2]
    with open(source, encoding="utf-8") as handle:
        template = yaml_parse(handle.read())
    translated = translate(template)
    with open(destination, "w", encoding="utf-8") as handle:
        json.dump(translated, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
