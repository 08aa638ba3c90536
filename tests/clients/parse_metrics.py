"""Parses Prometheus text exposition from stdin with the official Python client's parser
(prometheus_client.parser) and prints it as JSON: {"families": {name: type},
"samples": [[name, labels, value], ...]}. Fails (exit 1) on anything the parser refuses."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

families, samples = {}, []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        value = s.value if math.isfinite(s.value) else str(s.value)
        samples.append([s.name, s.labels, value])
print(json.dumps({"families": families, "samples": samples}))
