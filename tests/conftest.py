pytest_plugins = ["tests.fix_stack", "tests.fix_kafka", "tests.fix_router", "tests.fix_pipeline"]
