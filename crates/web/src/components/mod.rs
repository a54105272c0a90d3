pub mod capability_panel;
pub mod selftest_panel;
