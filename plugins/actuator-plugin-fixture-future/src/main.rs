//! The fixture as an executable: announces plugin API 2.0.

fn main() -> std::io::Result<()> {
    actuator_plugin_sdk::serve_stdio_announcing::<actuator_plugin_fixture_future::Future>(
        actuator_plugin_fixture_future::ANNOUNCED,
    )
}
