"""Test-session configuration: registers the shared checkpoint fixtures of each model stage."""

pytest_plugins = ["tests.fixtures.dit", "tests.fixtures.dcae", "tests.fixtures.text", "tests.fixtures.rope",
                  "tests.fixtures.lora", "tests.fixtures.controlnet", "tests.fixtures.text_files"]
