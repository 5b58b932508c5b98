//! The example plugin as an executable (the exec tier).

fn main() -> std::io::Result<()> {
    actuator_plugin_sdk::serve_stdio::<actuator_notifier_example::JsonLines>()
}
