pub mod capability_panel;
pub mod model_check_panel;
pub mod selftest_panel;
