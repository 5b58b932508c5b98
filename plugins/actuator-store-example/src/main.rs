//! The example store plugin as an executable (the exec tier). Its arguments are ignored.

fn main() -> std::io::Result<()> {
    actuator_plugin_sdk::store::serve_store_stdio::<actuator_store_example::SqliteExample>()
}
