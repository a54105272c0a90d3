pub mod capability_panel;
pub mod gallery_panel;
pub mod generate_panel;
pub mod image_input;
pub mod lora_manager;
pub mod model_check_panel;
pub mod model_manager;
pub mod selftest_panel;
